Code.require_file("support.exs", __DIR__)

# The examples of the seed document (State Storage Guide), verbatim, as tests.
defmodule MyBatchNode do
  use PocketFlex.BatchNode

  def prep(shared), do: Map.get(shared, "items", [])
  def exec_item(item), do: item * 10

  def post(shared, _items, results), do: {:default, Map.put(shared, "results", results)}
end

defmodule ResultProcessorNode do
  use PocketFlex.Node

  def prep(shared), do: Map.get(shared, "results", [])
  def exec(results), do: Enum.sum(results)

  def post(shared, _results, total), do: {nil, Map.put(shared, "total", total)}
end

defmodule MyApp.CustomStateStorage do
  @behaviour PocketFlex.StateStorage
  # The guide's custom backend, filled in: a public ETS table of its own.
  @table :my_app_custom_state_storage

  def ensure_table do
    if :ets.whereis(@table) == :undefined, do: :ets.new(@table, [:named_table, :public])
    :ok
  end

  @impl true
  def get_state(flow_id) do
    case :ets.lookup(@table, flow_id) do
      [{_, s}] -> s
      [] -> %{}
    end
  end

  @impl true
  def update_state(flow_id, new_state) do
    :ets.insert(@table, {flow_id, new_state})
    new_state
  end

  @impl true
  def merge_state(flow_id, state_updates) do
    update_state(flow_id, Map.merge(get_state(flow_id), state_updates))
  end

  @impl true
  def cleanup(flow_id) do
    :ets.delete(@table, flow_id)
    :ok
  end
end

defmodule PocketFlex.SeedExamplesTest do
  use ExUnit.Case, async: false

  alias PocketFlex.TestSupport

  test "Flow ID generation" do
    flow_id = "prefix_#{:erlang.unique_integer([:positive])}"
    assert "prefix_" <> _ = flow_id
    assert "prefix_" <> _ = PocketFlex.StateStorage.generate_flow_id("prefix")
  end

  test "Example: Basic State Management" do
    # Generate a unique flow ID
    flow_id = "my_flow_#{:erlang.unique_integer([:positive])}"

    # Initialize with initial state
    initial_state = %{"key" => "value"}
    PocketFlex.StateStorage.update_state(flow_id, initial_state)

    # Retrieve the current state
    current_state = PocketFlex.StateStorage.get_state(flow_id)
    assert current_state == %{"key" => "value"}

    # Update with new state
    new_state = %{"key" => "new_value"}
    PocketFlex.StateStorage.update_state(flow_id, new_state)
    assert PocketFlex.StateStorage.get_state(flow_id) == %{"key" => "new_value"}

    # Merge updates into current state
    updates = %{"another_key" => "another_value"}
    merged = PocketFlex.StateStorage.merge_state(flow_id, updates)
    assert merged == %{"key" => "new_value", "another_key" => "another_value"}

    # Clean up when done
    assert PocketFlex.StateStorage.cleanup(flow_id) == :ok
    assert PocketFlex.StateStorage.get_state(flow_id) == %{}
  end

  test "State Storage API: the four core functions" do
    flow_id = PocketFlex.StateStorage.generate_flow_id("api")
    new_state = %{"a" => 1}
    state_updates = %{"b" => 2}

    # Get the current state for a flow
    state = PocketFlex.StateStorage.get_state(flow_id)
    assert state == %{}

    # Update the state for a flow
    PocketFlex.StateStorage.update_state(flow_id, new_state)

    # Merge updates into the current state
    PocketFlex.StateStorage.merge_state(flow_id, state_updates)
    assert PocketFlex.StateStorage.get_state(flow_id) == %{"a" => 1, "b" => 2}

    # Clean up the state when done
    PocketFlex.StateStorage.cleanup(flow_id)
    assert PocketFlex.StateStorage.get_state(flow_id) == %{}
  end

  for backend <- [PocketFlex.StateStorage.Native, PocketFlex.StateStorage.ETS] do
    test "Example: Async Batch Processing (#{inspect(backend)})" do
      TestSupport.with_backend(unquote(backend), fn ->
        # Create a flow
        flow =
          PocketFlex.Flow.new()
          |> PocketFlex.Flow.add_node(MyBatchNode)
          |> PocketFlex.Flow.add_node(ResultProcessorNode)
          |> PocketFlex.Flow.connect(MyBatchNode, ResultProcessorNode)
          |> PocketFlex.Flow.start(MyBatchNode)

        # Initial state
        initial_state = %{"items" => [1, 2, 3, 4, 5]}

        # Run the flow asynchronously
        task = PocketFlex.AsyncBatchFlow.run_async_batch(flow, initial_state)

        # Wait for the result
        {:ok, final_state} = Task.await(task)

        assert final_state == %{
                 "items" => [1, 2, 3, 4, 5],
                 "results" => [10, 20, 30, 40, 50],
                 "total" => 150
               }

        # The same flow, run synchronously, gives the same result.
        assert PocketFlex.Flow.run(flow, initial_state) == {:ok, final_state}
      end)
    end
  end

  test "Implementing a Custom State Storage Backend, configured as in the guide" do
    MyApp.CustomStateStorage.ensure_table()
    old = Application.fetch_env(:pocket_flex, :state_storage)

    try do
      # config :pocket_flex, :state_storage, MyApp.CustomStateStorage
      Application.put_env(:pocket_flex, :state_storage, MyApp.CustomStateStorage)

      flow_id = PocketFlex.StateStorage.generate_flow_id("custom")
      PocketFlex.StateStorage.update_state(flow_id, %{"key" => "value"})
      assert MyApp.CustomStateStorage.get_state(flow_id) == %{"key" => "value"}
      assert PocketFlex.StateStorage.Native.get_state(flow_id) == %{}

      flow =
        PocketFlex.Flow.new()
        |> PocketFlex.Flow.add_node(MyBatchNode)
        |> PocketFlex.Flow.add_node(ResultProcessorNode)
        |> PocketFlex.Flow.connect(MyBatchNode, ResultProcessorNode)
        |> PocketFlex.Flow.start(MyBatchNode)

      assert {:ok, %{"total" => 60}} =
               Task.await(
                 PocketFlex.AsyncBatchFlow.run_async_batch(flow, %{"items" => [1, 2, 3]})
               )

      # Every flow state was cleaned up: only ours is left.
      assert :ets.tab2list(:my_app_custom_state_storage) == [{flow_id, %{"key" => "value"}}]
      PocketFlex.StateStorage.cleanup(flow_id)
    after
      TestSupport.restore(old)
    end
  end
end
