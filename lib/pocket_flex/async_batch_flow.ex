defmodule PocketFlex.AsyncBatchFlow do
  @moduledoc """
  Runs a `PocketFlex.Flow` in a task, with its state in
  `PocketFlex.StateStorage` and the items of batch nodes processed
  concurrently.

  `run_async_batch/2` returns a `Task` (await it with `Task.await/2`) whose
  result is `{:ok, final_state}` or `{:error, reason}`. The task:

    1. generates a flow id (`PocketFlex.StateStorage.generate_flow_id/1`)
       and stores the initial state under it, in the configured backend;
    2. runs the nodes from the start node. Before each node it reads the
       state from storage; after `post/3` it writes back only the keys the
       node changed (`merge_state/2`), so keys that other processes merged
       meanwhile are kept. For a `PocketFlex.BatchNode`, each item of the
       list `prep/1` returned runs `exec_item/1` in its own task, under
       `PocketFlex.TaskSupervisor`; the results, in item order, go to
       `post/3`, which sees the state as it is after the items ran;
    3. returns the final state and deletes it from storage (`cleanup/1`),
       on success and on error. The task traps exits: when the caller dies
       (or `Task.shutdown/2` is called), the flow stops before its next node
       and still cleans up.

  Item tasks may write to the flow's state themselves:
  `current_flow_id/0` gives them the id, and `merge_state/2` of the default
  backend is atomic, so concurrent merges of different keys all survive
  (upstream's parallel batch flow reads, modifies and writes whole states
  and loses updates).

      iex> defmodule DocDouble do
      ...>   use PocketFlex.BatchNode
      ...>   def prep(shared), do: shared["items"]
      ...>   def exec_item(n), do: 2 * n
      ...>   def post(shared, _items, doubled), do: {:default, Map.put(shared, "doubled", doubled)}
      ...> end
      iex> flow = PocketFlex.Flow.new() |> PocketFlex.Flow.add_node(DocDouble) |> PocketFlex.Flow.start(DocDouble)
      iex> task = PocketFlex.AsyncBatchFlow.run_async_batch(flow, %{"items" => [1, 2, 3]})
      iex> Task.await(task)
      {:ok, %{"doubled" => [2, 4, 6], "items" => [1, 2, 3]}}
  """

  alias PocketFlex.{BatchNode, Flow, StateStorage}

  @flow_id_key :pocket_flex_flow_id

  @doc """
  Starts running `flow` on `initial_state` in a task (linked to the caller,
  as `Task.async/1`) and returns the task; its result is
  `{:ok, final_state}` or `{:error, reason}` (`:no_start_node`,
  `{node, exception}`, `{node, {:item_exit, reason}}` when an item task
  dies, `{:caller_exit, reason}` when the caller died, or the exception
  raised by the storage backend). The flow's state is removed from storage before the task returns.

      iex> PocketFlex.AsyncBatchFlow.run_async_batch(PocketFlex.Flow.new(), %{}) |> Task.await()
      {:error, :no_start_node}
  """
  @spec run_async_batch(Flow.t(), map()) :: Task.t()
  def run_async_batch(%Flow{} = flow, initial_state) when is_map(initial_state) do
    caller = self()
    Task.async(fn -> run(flow, initial_state, caller) end)
  end

  def run_async_batch(%Flow{}, initial_state) do
    raise ArgumentError,
          "expected the initial state to be a map, got: #{inspect(initial_state)}"
  end

  @doc """
  The flow id of the `PocketFlex.AsyncBatchFlow` run that the calling
  process works for (the flow's task or one of its item tasks), or `nil`.

      iex> PocketFlex.AsyncBatchFlow.current_flow_id()
      nil
  """
  @spec current_flow_id() :: StateStorage.flow_id() | nil
  def current_flow_id, do: Process.get(@flow_id_key)

  defp run(%Flow{start_node: nil}, _initial, _caller), do: {:error, :no_start_node}

  defp run(%Flow{start_node: start} = flow, initial, caller) do
    flow_id = StateStorage.generate_flow_id("async_batch_flow")
    Process.put(@flow_id_key, flow_id)
    # Survive the caller's exit signal long enough to clean up.
    Process.flag(:trap_exit, true)

    try do
      StateStorage.update_state(flow_id, initial)
      loop(flow, start, flow_id, caller)
    rescue
      # The storage itself failed (e.g. its backend is not running).
      e -> {:error, e}
    catch
      :throw, {:caller_exit, _} = reason -> {:error, reason}
    after
      StateStorage.cleanup(flow_id)
      Process.delete(@flow_id_key)
    end
  end

  defp loop(flow, node, flow_id, caller) do
    receive do
      {:EXIT, ^caller, reason} -> throw({:caller_exit, reason})
    after
      0 -> :ok
    end

    case step(node, flow_id) do
      {:ok, action} ->
        case Flow.next_node(flow, node, action) do
          nil -> {:ok, StateStorage.get_state(flow_id)}
          next -> loop(flow, next, flow_id, caller)
        end

      {:error, _} = error ->
        error
    end
  end

  defp step(node, flow_id) do
    shared = StateStorage.get_state(flow_id)
    prep = node.prep(shared)

    with {:ok, exec, shared} <- exec(node, prep, flow_id, shared) do
      {action, new_shared} = PocketFlex.Node.check_post(node, node.post(shared, prep, exec))
      write_back(flow_id, shared, new_shared)
      {:ok, action || :default}
    end
  rescue
    e -> {:error, {node, e}}
  catch
    kind, reason -> {:error, {node, {kind, reason}}}
  end

  defp exec(node, prep, flow_id, shared) do
    if BatchNode.batch_node?(node) do
      with {:ok, results} <- exec_items(node, List.wrap(prep), flow_id) do
        # post/3 sees what the items merged while they ran.
        {:ok, results, StateStorage.get_state(flow_id)}
      end
    else
      {:ok, node.exec(prep), shared}
    end
  end

  defp exec_items(node, items, flow_id) do
    PocketFlex.TaskSupervisor
    |> Task.Supervisor.async_stream_nolink(
      items,
      fn item ->
        Process.put(@flow_id_key, flow_id)
        node.exec_item(item)
      end,
      ordered: true,
      timeout: :infinity,
      max_concurrency: System.schedulers_online() * 2
    )
    |> Enum.reduce_while({:ok, []}, fn
      {:ok, result}, {:ok, acc} -> {:cont, {:ok, [result | acc]}}
      {:exit, reason}, _ -> {:halt, {:error, {node, {:item_exit, reason}}}}
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  # Writes back what post/3 changed: changed and new keys are merged
  # atomically; removed keys need a whole-state update.
  defp write_back(flow_id, before, after_post) do
    changed =
      for {k, v} <- after_post, not match?({:ok, ^v}, Map.fetch(before, k)), into: %{}, do: {k, v}

    removed = for {k, _} <- before, not Map.has_key?(after_post, k), do: k

    cond do
      removed != [] ->
        current = StateStorage.get_state(flow_id)
        StateStorage.update_state(flow_id, current |> Map.drop(removed) |> Map.merge(changed))

      changed != %{} ->
        StateStorage.merge_state(flow_id, changed)

      true ->
        :ok
    end
  end
end
