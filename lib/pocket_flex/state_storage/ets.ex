defmodule PocketFlex.StateStorage.ETS do
  @moduledoc """
  The upstream-compatible ETS backend.

  As in upstream PocketFlex, the states live in one named, public ETS table
  (`:pocket_flex_shared_state`) owned by a GenServer: reads go straight to
  ETS from the caller, while every write (`update_state/2`,
  `merge_state/2`, `cleanup/1`) is a `GenServer.call/2` to that one process.
  Serialising the writes makes `merge_state/2` correct under concurrency
  (the read-merge-write runs in the server) but caps the write throughput
  of all flows together at one process. Unlike upstream, the table is
  really created with `read_concurrency: true` (upstream documents
  concurrent reads but does not configure them).

  Use it with `config :pocket_flex, :state_storage, PocketFlex.StateStorage.ETS`.
  The table dies with its GenServer: a crash of the server loses every state
  (the default `PocketFlex.StateStorage.Native` does not).

      iex> alias PocketFlex.StateStorage.ETS
      iex> ETS.update_state("ets_doc", %{"n" => 1})
      %{"n" => 1}
      iex> ETS.merge_state("ets_doc", %{"m" => 2})
      %{"m" => 2, "n" => 1}
      iex> ETS.get_state("ets_doc")
      %{"m" => 2, "n" => 1}
      iex> ETS.cleanup("ets_doc")
      :ok
      iex> ETS.get_state("ets_doc")
      %{}
  """

  @behaviour PocketFlex.StateStorage
  use GenServer

  alias PocketFlex.StateStorage

  @table :pocket_flex_shared_state

  @doc """
  The name of the ETS table.

      iex> PocketFlex.StateStorage.ETS.table_name()
      :pocket_flex_shared_state
  """
  @spec table_name() :: atom()
  def table_name, do: @table

  @doc "Starts the GenServer that owns the table (started by `PocketFlex.Supervisor`)."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc """
  Returns the state of `flow_id`, or `%{}`, reading ETS in the caller.

      iex> PocketFlex.StateStorage.ETS.get_state("ets_doc_unknown")
      %{}
  """
  @impl StateStorage
  @spec get_state(StateStorage.flow_id()) :: StateStorage.state()
  def get_state(flow_id) do
    case :ets.lookup(@table, flow_id) do
      [{_, state}] -> state
      [] -> %{}
    end
  end

  @doc """
  Replaces the state of `flow_id` (through the GenServer); raises
  `ArgumentError` for a non-map, in the caller.

      iex> PocketFlex.StateStorage.ETS.update_state("ets_doc_u", %{a: 1})
      %{a: 1}
      iex> PocketFlex.StateStorage.ETS.update_state("ets_doc_u", "a string")
      ** (ArgumentError) expected the state of flow "ets_doc_u" to be a map, got: "a string"
  """
  @impl StateStorage
  @spec update_state(StateStorage.flow_id(), StateStorage.state()) :: StateStorage.state()
  def update_state(flow_id, new_state) do
    StateStorage.check_map!(flow_id, new_state, "state")
    GenServer.call(__MODULE__, {:update, flow_id, new_state})
  end

  @doc """
  Merges `state_updates` into the state of `flow_id` in the GenServer and
  returns the result; raises `ArgumentError` for a non-map.

      iex> PocketFlex.StateStorage.ETS.merge_state("ets_doc_m", %{a: 1})
      %{a: 1}
      iex> PocketFlex.StateStorage.ETS.merge_state("ets_doc_m", %{a: 2, b: 3})
      %{a: 2, b: 3}
  """
  @impl StateStorage
  @spec merge_state(StateStorage.flow_id(), StateStorage.state()) :: StateStorage.state()
  def merge_state(flow_id, state_updates) do
    StateStorage.check_map!(flow_id, state_updates, "state update")
    GenServer.call(__MODULE__, {:merge, flow_id, state_updates})
  end

  @doc """
  Removes the state of `flow_id` (through the GenServer); `:ok` also for
  unknown flows.

      iex> PocketFlex.StateStorage.ETS.cleanup("ets_doc_m")
      :ok
  """
  @impl StateStorage
  @spec cleanup(StateStorage.flow_id()) :: :ok
  def cleanup(flow_id), do: GenServer.call(__MODULE__, {:cleanup, flow_id})

  @impl GenServer
  def init(:ok) do
    :ets.new(@table, [:set, :public, :named_table, {:read_concurrency, true}])
    {:ok, nil}
  end

  @impl GenServer
  def handle_call({:update, flow_id, new_state}, _from, s) do
    :ets.insert(@table, {flow_id, new_state})
    {:reply, new_state, s}
  end

  def handle_call({:merge, flow_id, updates}, _from, s) do
    merged = Map.merge(get_state(flow_id), updates)
    :ets.insert(@table, {flow_id, merged})
    {:reply, merged, s}
  end

  def handle_call({:cleanup, flow_id}, _from, s) do
    :ets.delete(@table, flow_id)
    {:reply, :ok, s}
  end
end
