defmodule PocketFlex.StateStorage.Native do
  @moduledoc """
  The default state storage: one NativeStore table, `#{inspect(:pocket_flex_state)}`.

  Flow states are `{flow_id, map}` objects in a public NativeStore set
  table. Every call runs in the caller's process, straight into the NIF: no
  GenServer is in the path of reads or writes.

      iex> alias PocketFlex.StateStorage.Native
      iex> Native.update_state("native_doc", %{"step" => 1})
      %{"step" => 1}
      iex> Native.merge_state("native_doc", %{"done" => true})
      %{"done" => true, "step" => 1}
      iex> Native.get_state("native_doc")
      %{"done" => true, "step" => 1}
      iex> Native.cleanup("native_doc")
      :ok
      iex> Native.get_state("native_doc")
      %{}

  ## Atomic merges

  `merge_state/2` is `NativeStore.Table.merge_map/3`: the read, the
  `Map.merge/2` and the write happen atomically inside the engine, so any
  number of processes can merge into the same flow at once and no key is
  ever lost (upstream reads, merges and writes through one GenServer, which
  is correct but serialises every write of every flow).

  ## Surviving crashes

  A NativeStore table belongs to the process that created it and is deleted
  when that process exits, unless it names a live heir. The table is kept by
  two small processes of `PocketFlex.Supervisor`, a `NativeStore.Table.Keeper`
  pair registered as `PocketFlex.StateStorage.Native.Primary` and
  `PocketFlex.StateStorage.Native.Secondary`:

    * the *primary* keeper creates the table at start-up, naming the
      *secondary* keeper as its heir;
    * when the owner dies (whichever keeper it is), the table passes to the
      other keeper with every state in it;
    * when a keeper restarts, the current owner names it heir again
      (`NativeStore.Table.setopts/2`), so the next crash is survived too.

  So the states survive any number of crashes of PocketFlex processes, one
  after the other: the calling process (states never live in it), the
  table owner, or the heir, in any order. `status/0` tells whether the
  table currently has a live heir.

  The states are lost only if both keepers are gone at once: the owner dies
  while the heir is dead or still restarting (the window is the few
  microseconds between a keeper's restart and its naming as heir), or
  `PocketFlex.Supervisor` itself (or the `:native_store` application)
  stops. The table is then deleted, as an ETS table would be, and the
  keepers recreate it empty.
  """

  @behaviour PocketFlex.StateStorage

  alias NativeStore.Table
  alias PocketFlex.StateStorage

  @table :pocket_flex_state
  @pt_key {__MODULE__, :table}

  @doc """
  The name of the NativeStore table holding the states.

      iex> PocketFlex.StateStorage.Native.table_name()
      :pocket_flex_state
  """
  @spec table_name() :: atom()
  def table_name, do: @table

  @doc """
  Returns the state of `flow_id`, or `%{}`.

      iex> PocketFlex.StateStorage.Native.get_state("native_doc_unknown")
      %{}
  """
  @impl StateStorage
  @spec get_state(StateStorage.flow_id()) :: StateStorage.state()
  def get_state(flow_id) do
    case Table.lookup(table(), flow_id) do
      [{_, state}] -> state
      [] -> %{}
    end
  end

  @doc """
  Replaces the state of `flow_id`; raises `ArgumentError` for a non-map.

      iex> PocketFlex.StateStorage.Native.update_state("native_doc_u", %{a: 1})
      %{a: 1}
      iex> PocketFlex.StateStorage.Native.update_state("native_doc_u", :oops)
      ** (ArgumentError) expected the state of flow "native_doc_u" to be a map, got: :oops
  """
  @impl StateStorage
  @spec update_state(StateStorage.flow_id(), StateStorage.state()) :: StateStorage.state()
  def update_state(flow_id, new_state) do
    StateStorage.check_map!(flow_id, new_state, "state")
    Table.insert(table(), {flow_id, new_state})
    new_state
  end

  @doc """
  Atomically merges `state_updates` into the state of `flow_id` and returns
  the result; raises `ArgumentError` for a non-map.

      iex> PocketFlex.StateStorage.Native.merge_state("native_doc_m", %{a: 1})
      %{a: 1}
      iex> PocketFlex.StateStorage.Native.merge_state("native_doc_m", %{b: 2})
      %{a: 1, b: 2}
  """
  @impl StateStorage
  @spec merge_state(StateStorage.flow_id(), StateStorage.state()) :: StateStorage.state()
  def merge_state(flow_id, state_updates) do
    StateStorage.check_map!(flow_id, state_updates, "state update")
    Table.merge_map(table(), flow_id, state_updates)
  end

  @doc """
  Removes the state of `flow_id`; `:ok` also for unknown flows.

      iex> PocketFlex.StateStorage.Native.cleanup("native_doc_m")
      :ok
  """
  @impl StateStorage
  @spec cleanup(StateStorage.flow_id()) :: :ok
  def cleanup(flow_id) do
    Table.delete(table(), flow_id)
    :ok
  end

  @doc """
  Who keeps the table: `%{owner: pid, heir: pid | :none, redundant: boolean, size: n}`.
  `redundant` is true when a live heir other than the owner is set, i.e.
  when the table would survive the death of its owner right now.

      iex> %{owner: owner} = PocketFlex.StateStorage.Native.status()
      iex> is_pid(owner)
      true
      iex> owner in [
      ...>   Process.whereis(PocketFlex.StateStorage.Native.Primary),
      ...>   Process.whereis(PocketFlex.StateStorage.Native.Secondary)
      ...> ]
      true
  """
  @spec status() :: %{
          owner: pid(),
          heir: pid() | :none,
          redundant: boolean(),
          size: non_neg_integer()
        }
  def status do
    case Table.info(@table) do
      :undefined ->
        raise ArgumentError,
              "the PocketFlex state table does not exist (is :native_store started?)"

      info ->
        owner = info[:owner]
        heir = info[:heir]

        %{
          owner: owner,
          heir: heir,
          redundant: is_pid(heir) and heir != owner and Process.alive?(heir),
          size: info[:size]
        }
    end
  end

  @doc false
  # Called by the keeper that creates, finds or inherits the table (the
  # :on_table option of NativeStore.Table.Keeper, see PocketFlex.Supervisor):
  # publishes its reference, so calls skip the lookup of the name.
  @spec publish(reference()) :: :ok
  def publish(ref) do
    if :persistent_term.get(@pt_key, nil) != ref, do: :persistent_term.put(@pt_key, ref)
    :ok
  end

  @compile {:inline, table: 0}
  defp table, do: :persistent_term.get(@pt_key, @table)
end
