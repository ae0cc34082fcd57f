defmodule PocketFlex.StateStorage.Native.Keeper do
  @moduledoc """
  One of the two processes that keep the table of
  `PocketFlex.StateStorage.Native` alive (see "Surviving crashes" there).

  Two keepers run under `PocketFlex.Supervisor`, registered as
  `PocketFlex.StateStorage.Native.Primary` and
  `PocketFlex.StateStorage.Native.Secondary`, each knowing its peer's name.
  Whichever owns the table, the other is its heir: when the owner dies, the
  heir receives the table (`{:"ETS-TRANSFER", ...}`) and becomes the owner;
  when the dead keeper restarts, it asks the new owner to name it heir.
  Keepers hold nothing but their role; they never touch the flow states.

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
        owner = Table.info(ref, :owner)
        if owner != self(), do: ask_to_be_heir(owner, peer)
    end

    {:ok, %{role: role, peer: peer}}
  end

  @impl true
  def handle_call({:name_heir, pid}, _from, state) do
    {:reply, name_heir(pid), state}
  end

  @impl true
  def handle_info({:"ETS-TRANSFER", ref, _from, _data}, state) do
    # The owner died: the table is ours now, with all its states. If the
    # peer has restarted already, it asked us before the transfer reached
    # us; naming it again is harmless.
    Native.publish(ref)
    if pid = alive(state.peer), do: name_heir(pid)
    {:noreply, state}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  defp create(peer) do
    heir =
      case alive(peer) do
        nil -> []
        pid -> [{:heir, pid, :pocket_flex}]
      end

    opts = [:set, :public, :named_table, {:read_concurrency, true}, {:write_concurrency, true}]
    Table.new(Native.table_name(), opts ++ heir)
    Native.publish(Table.whereis(Native.table_name()))
  end

  defp ask_to_be_heir(owner, peer) do
    case alive(peer) do
      ^owner when is_pid(owner) ->
        case GenServer.call(owner, {:name_heir, self()}, 5_000) do
          :ok -> :ok
          {:error, reason} -> degraded(reason)
        end

      _ ->
        degraded({:owner_is_not_the_peer, owner})
    end
  catch
    :exit, reason -> degraded(reason)
  end

  # Runs in the owner: names `pid` heir of the table. This needs
  # NativeStore.Table.setopts/2, which the table layer does not have yet.
  defp name_heir(pid) do
    if function_exported?(Table, :setopts, 2) do
      apply(Table, :setopts, [Native.table_name(), {:heir, pid, :pocket_flex}])
      :ok
    else
      {:error, :setopts_unavailable}
    end
  rescue
    e -> {:error, e}
  end

  defp degraded(reason) do
    Logger.warning(
      "PocketFlex state table has no live heir (#{inspect(reason)}): it will not " <>
        "survive the death of its owner until the application restarts"
    )
  end

  defp alive(name) do
    case Process.whereis(name) do
      nil -> nil
      pid -> if Process.alive?(pid), do: pid
    end
  end
end
