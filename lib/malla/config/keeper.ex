defmodule Malla.Config.Keeper do
  @moduledoc false
  # Keeps the Malla.Config table alive. Two keepers run under
  # Malla.Supervisor, Malla.Config.Heir and Malla.Config.Owner (started in
  # that order; the names only say who holds what at start-up). Whichever
  # keeper owns the table, the other is its heir, so the table survives any
  # number of crashes of either keeper, one at a time:
  #
  #   * the owner dies: the heir receives the table ({:"ETS-TRANSFER", ...})
  #     with its data, and names the peer heir as soon as it is back;
  #   * a keeper (re)starts and finds the table owned by its peer: it asks
  #     the peer, synchronously from init/1, to name it heir
  #     (NativeStore.Table.setopts/2). If the peer does not own the table
  #     yet (the old owner just died and the transfer is still on its way),
  #     the peer names it heir when the transfer arrives;
  #   * every @check_ms each keeper checks the table: the owner re-names its
  #     live peer heir if the heir is not that peer (closes any remaining
  #     race), and a missing table is recreated, empty.
  #
  # Data is lost only when both keepers are gone at once: the heir is dead
  # (or still restarting, not yet named heir) when the owner dies, or
  # Malla.Supervisor itself stops. The table is then deleted, as in ETS, and
  # the keepers recreate it empty.
  use GenServer
  require Logger

  alias NativeStore.Table

  # How often a keeper checks the table and its heir.
  @check_ms 200
  @heir_data :malla_config

  @doc false
  def child_spec({name, other, role}) do
    %{id: name, start: {__MODULE__, :start_link, [{name, other, role}]}}
  end

  @doc false
  def start_link({name, other, role}),
    do: GenServer.start_link(__MODULE__, {other, role}, name: name)

  @impl true
  def init({other, role}) do
    case Table.whereis(table()) do
      # At start-up the heir starts first and leaves creating the table to
      # the owner; any keeper that restarts to find it missing recreates it.
      :undefined ->
        if role == :owner or alive(other), do: create(other)

      _ref ->
        ask_to_be_heir(other)
    end

    schedule_check()
    {:ok, other}
  end

  @impl true
  def handle_call({:name_heir, pid}, _from, other) do
    # From the restarted peer. We can only name an heir if we own the table;
    # if not yet (the transfer from the dead owner is in flight), we name
    # the peer when the {:"ETS-TRANSFER", ...} arrives.
    {:reply, name_heir(pid), other}
  end

  @impl true
  def handle_info(:check, other) do
    check(other)
    schedule_check()
    {:noreply, other}
  end

  def handle_info({:"ETS-TRANSFER", _tab, _from, _data}, other) do
    # The owner died: the table is ours, with its data. Name the peer heir
    # if it is back already (else it asks us when it restarts).
    if pid = alive(other), do: name_heir(pid)
    {:noreply, other}
  end

  def handle_info(_msg, other), do: {:noreply, other}

  defp table, do: Malla.Config.table()

  defp schedule_check, do: Process.send_after(self(), :check, @check_ms)

  defp check(other) do
    case Table.info(table()) do
      :undefined ->
        Logger.warning(
          "Malla.Config table lost (both of its keepers died at once): recreating it empty"
        )

        create(other)

      info ->
        peer = alive(other)

        if info[:owner] == self() and peer != nil and info[:heir] != peer,
          do: name_heir(peer)
    end

    :ok
  end

  defp create(other) do
    heir =
      case alive(other) do
        nil -> []
        pid -> [{:heir, pid, @heir_data}]
      end

    Table.new(table(), [:set, :public, :named_table, {:read_concurrency, true}] ++ heir)
    :ok
  rescue
    # Created meanwhile by the other keeper, which names us heir (now, when
    # it asks, or at its next check).
    ArgumentError -> :ok
  end

  defp ask_to_be_heir(other) do
    case alive(other) do
      nil -> :ok
      pid -> GenServer.call(pid, {:name_heir, self()}, 1_000)
    end
  catch
    # The peer died meanwhile; if the table survives, the checks fix it.
    :exit, _ -> :ok
  end

  # Runs in the owner (setopts/2 raises ArgumentError for anyone else).
  defp name_heir(pid) when pid != self() do
    Table.setopts(table(), {:heir, pid, @heir_data})
    :ok
  rescue
    ArgumentError -> :not_owner
  end

  defp name_heir(_self), do: :ok

  defp alive(name) do
    case Process.whereis(name) do
      pid when is_pid(pid) and pid != self() -> if Process.alive?(pid), do: pid
      _ -> nil
    end
  end
end
