defmodule PocketFlex.FlowTest do
  use ExUnit.Case, async: true

  alias PocketFlex.{AsyncBatchFlow, Flow, StateStorage}

  defmodule Classify do
    use PocketFlex.Node
    def prep(shared), do: shared["n"]
    def exec(n), do: if(rem(n, 2) == 0, do: :even, else: :odd)
    def post(shared, _n, kind), do: {kind, Map.put(shared, "kind", kind)}
  end

  defmodule Even do
    use PocketFlex.Node
    def post(shared, _, _), do: {nil, Map.put(shared, "path", "even")}
  end

  defmodule Odd do
    use PocketFlex.Node
    def post(shared, _, _), do: {:default, Map.put(shared, "path", "odd")}
  end

  defmodule Countdown do
    use PocketFlex.Node
    def prep(shared), do: shared["left"]

    def post(shared, left, _),
      do: {if(left > 1, do: :again, else: :done), Map.put(shared, "left", left - 1)}
  end

  defmodule BadPost do
    use PocketFlex.Node
    def post(_shared, _, _), do: :not_a_tuple
  end

  defmodule DropKey do
    use PocketFlex.Node
    def post(shared, _, _), do: {:default, shared |> Map.delete("drop") |> Map.put("new", 1)}
  end

  # Each item merges its own key into the flow's state, concurrently.
  defmodule MergeEach do
    use PocketFlex.BatchNode
    def prep(shared), do: Enum.to_list(1..shared["n"])

    def exec_item(i) do
      StateStorage.merge_state(AsyncBatchFlow.current_flow_id(), %{{:item, i} => self()})
      i
    end

    def post(shared, _items, results) do
      pids = for {{:item, _}, pid} <- shared, uniq: true, do: pid
      {:default, Map.merge(shared, %{"sum" => Enum.sum(results), "procs" => length(pids)})}
    end
  end

  defp branching do
    Flow.new()
    |> Flow.add_node(Classify)
    |> Flow.add_node(Even)
    |> Flow.add_node(Odd)
    |> Flow.connect(Classify, Even, :even)
    |> Flow.connect(Classify, Odd, :odd)
    |> Flow.start(Classify)
  end

  test "actions pick the next node" do
    assert {:ok, %{"path" => "even", "kind" => :even}} = Flow.run(branching(), %{"n" => 2})
    assert {:ok, %{"path" => "odd", "kind" => :odd}} = Flow.run(branching(), %{"n" => 3})
  end

  test "a node can loop on itself; an unconnected action ends the flow" do
    flow =
      Flow.new()
      |> Flow.add_node(Countdown)
      |> Flow.connect(Countdown, Countdown, :again)
      |> Flow.start(Countdown)

    assert Flow.run(flow, %{"left" => 5}) == {:ok, %{"left" => 0}}

    assert Task.await(AsyncBatchFlow.run_async_batch(flow, %{"left" => 3})) ==
             {:ok, %{"left" => 0}}
  end

  test "errors: raising nodes, bad post results, no start node" do
    flow = Flow.new() |> Flow.add_node(BadPost) |> Flow.start(BadPost)
    assert {:error, {BadPost, %ArgumentError{}}} = Flow.run(flow, %{})

    assert {:error, {BadPost, %ArgumentError{}}} =
             Task.await(AsyncBatchFlow.run_async_batch(flow, %{}))

    assert Flow.run(Flow.new(), %{}) == {:error, :no_start_node}
    assert_raise ArgumentError, fn -> Flow.run(flow, [:not_a_map]) end
    assert_raise ArgumentError, fn -> AsyncBatchFlow.run_async_batch(flow, nil) end
  end

  test "building: unknown nodes and non-node modules are rejected" do
    assert_raise ArgumentError, fn -> Flow.add_node(Flow.new(), Enum) end
    assert_raise ArgumentError, fn -> Flow.connect(Flow.new(), Even, Odd) end
    assert_raise ArgumentError, fn -> Flow.start(Flow.new(), Even) end
    flow = Flow.new() |> Flow.add_node(Even) |> Flow.add_node(Even)
    assert flow.nodes == [Even]
  end

  test "async: keys removed by post are removed from the stored state" do
    flow = Flow.new() |> Flow.add_node(DropKey) |> Flow.start(DropKey)

    assert Task.await(AsyncBatchFlow.run_async_batch(flow, %{"drop" => 1, "keep" => 2})) ==
             {:ok, %{"keep" => 2, "new" => 1}}
  end

  test "async: batch items run concurrently and their merges are all kept" do
    flow = Flow.new() |> Flow.add_node(MergeEach) |> Flow.start(MergeEach)
    assert {:ok, final} = Task.await(AsyncBatchFlow.run_async_batch(flow, %{"n" => 200}))
    assert final["sum"] == div(200 * 201, 2)
    assert Enum.count(final, &match?({{:item, _}, _}, &1)) == 200
    assert final["procs"] > 1
  end
end
