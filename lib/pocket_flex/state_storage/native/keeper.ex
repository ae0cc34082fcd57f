defmodule PocketFlex.StateStorage.Native.Keeper do
  @moduledoc """
  One of the two processes that keep the table of
  `PocketFlex.StateStorage.Native` alive (see "Surviving crashes" there).

  Two keepers run under `PocketFlex.Supervisor`, registered as
  `PocketFlex.StateStorage.Native.Primary` and
  `PocketFlex.StateStorage.Native.Secondary`, each knowing its peer's name.
  Whichever owns the table, the other is its heir: when the owner dies, the
  heir receives the table (`{:"ETS-TRANSFER", ...}`) and becomes the owner;
  when the dead keeper restarts, it asks the owner, from its `init/1`, to
  name it heir (`NativeStore.Table.setopts/2`). If the old owner has just
  died and the transfer has not reached the peer yet, the peer names the
  restarted keeper heir when the transfer arrives. Every 200 ms each
  keeper also checks the table: the owner re-names its live peer heir if
  needed, and a lost table is recreated (empty). Keepers hold nothing but
  their role; they never touch the flow states.

      iex> owner = PocketFlex.StateStorage.Native.status().owner
      iex> owner in [
      ...>   Process.whereis(PocketFlex.StateStorage.Native.Primary),
      ...>   Process.whereis(PocketFlex.StateStorage.Native.Secondary)
      ...> ]
      true
  """
  use GenServer
  require Logger

  alias NativeStore.Table
  alias PocketFlex.StateStorage.Native

  # How often a keeper checks the table and its heir.
  @check_ms 200
  @heir_data :pocket_flex

  @typedoc "`:primary` creates the table at start-up; `:secondary` starts first and becomes its heir."
  @type role :: :primary | :secondary

  @doc """
  A child spec for the keeper with `role`, registered as `name`, whose peer
  is registered as `peer`.
  """
  @spec child_spec({role(), atom(), atom()}) :: Supervisor.child_spec()
  def child_spec({_role, name, _peer} = arg) do
    %{id: name, start: {__MODULE__, :start_link, [arg]}}
  end

  @doc "Starts a keeper (see `child_spec/1`)."
  @spec start_link({role(), atom(), atom()}) :: GenServer.on_start()
  def start_link({role, name, peer}) when role in [:primary, :secondary] do
    GenServer.start_link(__MODULE__, {role, peer}, name: name)
  end

  @impl true
  def init({role, peer}) do
    case Table.whereis(Native.table_name()) do
      :undefined ->
        # At start-up the secondary starts first and waits for the primary
        # to create the table with it as heir. Otherwise (the table has
        # gone), whoever finds it missing recreates it.
        if role == :primary or alive(peer), do: create(peer)

      ref ->
        Native.publish(ref)
        ask_to_be_heir(peer)
    end

    schedule_check()
    {:ok, %{role: role, peer: peer}}
  end

  @impl true
  def handle_call({:name_heir, pid}, _from, state) do
    # From the restarted peer. Only the owner can name an heir: if the
    # transfer from the dead owner has not reached us yet, we name the peer
    # when it arrives (handle_info below).
    {:reply, name_heir(pid), state}
  end

  @impl true
  def handle_info({:"ETS-TRANSFER", ref, _from, _data}, state) do
    # The owner died: the table is ours now, with all its states. Name the
    # peer heir if it is back already (else it asks us when it restarts).
    Native.publish(ref)
    if pid = alive(state.peer), do: name_heir(pid)
    {:noreply, state}
  end

  def handle_info(:check, state) do
    check(state.peer)
    schedule_check()
    {:noreply, state}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  defp schedule_check, do: Process.send_after(self(), :check, @check_ms)

  defp check(peer) do
    case Table.info(Native.table_name()) do
      :undefined ->
        Logger.warning(
          "PocketFlex state table lost (both of its keepers died at once): recreating it empty"
        )

        create(peer)

      info ->
        live_peer = alive(peer)

        if info[:owner] == self() and live_peer != nil and info[:heir] != live_peer,
          do: name_heir(live_peer)
    end

    :ok
  end

  defp create(peer) do
    heir =
      case alive(peer) do
        nil -> []
        pid -> [{:heir, pid, @heir_data}]
      end

    opts = [:set, :public, :named_table, {:read_concurrency, true}, {:write_concurrency, true}]
    Table.new(Native.table_name(), opts ++ heir)
    Native.publish(Table.whereis(Native.table_name()))
  rescue
    # Created meanwhile by the peer, which names us heir (when we ask, or
    # at its next check).
    ArgumentError -> :ok
  end

  defp ask_to_be_heir(peer) do
    case alive(peer) do
      nil -> :ok
      pid -> GenServer.call(pid, {:name_heir, self()}, 1_000)
    end
  catch
    # The peer died meanwhile; if the table survives, the checks fix it.
    :exit, _ -> :ok
  end

  # Runs in the owner (setopts/2 raises ArgumentError for anyone else).
  defp name_heir(pid) when pid != self() do
    Table.setopts(Native.table_name(), {:heir, pid, @heir_data})
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
