defmodule Malla.Config.Keeper do
  @moduledoc false
  # Keeps the Malla.Config table alive. Two keepers run under
  # Malla.Supervisor, Malla.Config.Heir and Malla.Config.Owner (started in
  # that order). A keeper that starts and finds no table creates it, owned
  # by itself, with the other keeper as heir: if the owner dies, the heir
  # inherits the table and its data, and the restarted keeper finds the
  # table in place.
  #
  # NativeStore.Table has no setopts/2 or give_away/3 yet, so after an
  # inheritance the table has no heir until one is settable: a second crash
  # (of the keeper now owning it) loses the data, and the keeper then
  # recreates an empty table. Both keepers also check every @check_ms that
  # the table exists, and recreate it if it was lost.
  use GenServer

  alias NativeStore.Table

  # How often a keeper checks that the table still exists.
  @check_ms 200

  @doc false
  def child_spec({name, other, role}) do
    %{id: name, start: {__MODULE__, :start_link, [{name, other, role}]}}
  end

  @doc false
  def start_link({name, other, role}),
    do: GenServer.start_link(__MODULE__, {other, role}, name: name)

  @impl true
  def init({other, role}) do
    # The heir starts first, with no other keeper to name as its own heir:
    # it leaves creating the table to the owner, unless it is restarted
    # after the table was lost while the owner lives.
    if role == :owner or is_pid(Process.whereis(other)), do: ensure_table(other)
    schedule_check()
    {:ok, other}
  end

  @impl true
  def handle_info(:check, other) do
    # The table is lost only when its last holder died: recreate it (empty)
    # so that Malla.Config keeps working.
    ensure_table(other)
    schedule_check()
    {:noreply, other}
  end

  def handle_info({:"ETS-TRANSFER", _tab, _from, _data}, other), do: {:noreply, other}
  def handle_info(_msg, other), do: {:noreply, other}

  defp schedule_check, do: Process.send_after(self(), :check, @check_ms)

  defp ensure_table(other) do
    table = Malla.Config.table()

    if Table.whereis(table) == :undefined do
      heir =
        case Process.whereis(other) do
          pid when is_pid(pid) and pid != self() -> [{:heir, pid, :malla_config}]
          _ -> []
        end

      try do
        Table.new(table, [:set, :public, :named_table, {:read_concurrency, true}] ++ heir)
      rescue
        # Created meanwhile by the other keeper.
        ArgumentError -> :ok
      end
    end

    :ok
  end
end
