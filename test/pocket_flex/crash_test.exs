Code.require_file("support.exs", __DIR__)

defmodule PocketFlex.CrashTest do
  # Not async: these tests kill the processes that keep the shared table.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  alias PocketFlex.{AsyncBatchFlow, Flow, StateStorage}
  alias PocketFlex.StateStorage.{ETS, Native}
  alias PocketFlex.TestSupport

  @keepers [Native.Primary, Native.Secondary]

  # After each test, restart PocketFlex.Supervisor so that the next test
  # starts with a fresh table and a live heir again.
  setup do
    on_exit(fn ->
      capture_log(fn ->
        :ok = Supervisor.terminate_child(NativeStore.Supervisor, PocketFlex.Supervisor)
        # Stopping both keepers deletes the table (no live heir is left);
        # make sure of it, so that the restart creates a fresh one.
        TestSupport.wait_until(fn -> NativeStore.Table.info(:pocket_flex_state) == :undefined end)

        {:ok, _} = Supervisor.restart_child(NativeStore.Supervisor, PocketFlex.Supervisor)
      end)
    end)

    :ok
  end

  defp kill_and_wait_restart(name) do
    pid = Process.whereis(name)
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}

    TestSupport.wait_until(fn ->
      new = Process.whereis(name)
      new && new != pid && Process.alive?(new) && :sys.get_state(new) && new
    end)
  end

  defp owner_keeper do
    owner = Native.status().owner
    Enum.find(@keepers, &(Process.whereis(&1) == owner))
  end

  test "at start-up the table is owned by one keeper, with the other as live heir" do
    status = Native.status()
    assert status.redundant
    keepers = Enum.map(@keepers, &Process.whereis/1)
    assert Enum.sort([status.owner, status.heir]) == Enum.sort(keepers)
  end

  for backend <- [Native, ETS] do
    test "#{inspect(backend)}: the state survives the crash of the calling process" do
      backend = unquote(backend)
      id = StateStorage.generate_flow_id("crash_caller")
      Process.flag(:trap_exit, true)

      capture_log(fn ->
        pid =
          spawn_link(fn ->
            backend.update_state(id, %{"a" => 1})
            backend.merge_state(id, %{"b" => 2})
            raise "caller crashes"
          end)

        assert_receive {:EXIT, ^pid, {%RuntimeError{}, _}}
        Process.sleep(20)
      end)

      assert backend.get_state(id) == %{"a" => 1, "b" => 2}

      killed = spawn(fn -> backend.merge_state(id, %{"c" => 3}) && Process.sleep(:infinity) end)
      TestSupport.wait_until(fn -> backend.get_state(id)["c"] == 3 end)
      Process.exit(killed, :kill)
      Process.sleep(20)
      assert backend.get_state(id) == %{"a" => 1, "b" => 2, "c" => 3}
      backend.cleanup(id)
    end
  end

  test "native: the states survive killing the table owner process of the library" do
    ids = for i <- 1..100, do: StateStorage.generate_flow_id("crash_owner_#{i}")
    for id <- ids, do: Native.update_state(id, %{"id" => id, "n" => 1})
    owner = owner_keeper()
    old_owner_pid = Process.whereis(owner)
    [heir] = @keepers -- [owner]
    heir_pid = Process.whereis(heir)

    capture_log(fn -> kill_and_wait_restart(owner) end)

    # The heir now owns the table, with every state in it.
    assert Native.status().owner == heir_pid
    refute Native.status().owner == old_owner_pid
    for id <- ids, do: assert(Native.get_state(id) == %{"id" => id, "n" => 1})

    # Reads and writes go on as before, from any process.
    for id <- ids, do: Native.merge_state(id, %{"n" => 2})
    for id <- ids, do: assert(Native.get_state(id)["n"] == 2)

    # The restarted keeper is the heir now.
    wait_redundant()
    assert Native.status().heir == Process.whereis(owner)

    for id <- ids, do: Native.cleanup(id)
  end

  test "native: the states survive killing the heir process of the library" do
    id = StateStorage.generate_flow_id("crash_heir")
    Native.update_state(id, %{"x" => 1})
    owner_pid = Native.status().owner
    [heir] = @keepers -- [owner_keeper()]

    capture_log(fn -> kill_and_wait_restart(heir) end)

    assert Native.status().owner == owner_pid
    assert Native.get_state(id) == %{"x" => 1}
    assert Native.merge_state(id, %{"y" => 2}) == %{"x" => 1, "y" => 2}
    Native.cleanup(id)
  end

  test "native: concurrent merges go on while the owner is killed" do
    id = StateStorage.generate_flow_id("crash_during")
    owner = owner_keeper()

    writers =
      for w <- 1..4 do
        Task.async(fn ->
          for i <- 1..500, do: Native.merge_state(id, %{{w, i} => i})
          :ok
        end)
      end

    capture_log(fn -> kill_and_wait_restart(owner) end)
    Enum.each(writers, &assert(Task.await(&1, 10_000) == :ok))
    assert map_size(Native.get_state(id)) == 2_000
    Native.cleanup(id)
  end

  test "native: the states survive 10 alternating kills of the owner and of the heir" do
    ids = for i <- 1..100, do: StateStorage.generate_flow_id("crash_turns_#{i}")
    for id <- ids, do: Native.update_state(id, %{"id" => id})
    wait_redundant()

    for round <- 1..10 do
      %{owner: owner, heir: heir} = Native.status()
      {victim, survivor} = if rem(round, 2) == 1, do: {owner, heir}, else: {heir, owner}
      [name] = Enum.filter(@keepers, &(Process.whereis(&1) == victim))

      capture_log(fn ->
        kill_and_wait_restart(name)
        # Short wait for the restart: the restarted keeper is heir again.
        wait_redundant()
      end)

      status = Native.status()
      assert status.owner == survivor
      assert status.heir == Process.whereis(name)
      refute victim in [status.owner, status.heir]

      for id <- ids, do: assert(Native.get_state(id)["id"] == id)
      for id <- ids, do: Native.merge_state(id, %{"round" => round})
      for id <- ids, do: assert(Native.get_state(id) == %{"id" => id, "round" => round})
    end

    for id <- ids, do: Native.cleanup(id)
  end

  test "native: the states are lost only when both keepers are gone at once" do
    id = StateStorage.generate_flow_id("crash_both")
    Native.update_state(id, %{"x" => 1})
    wait_redundant()
    heir = Native.status().heir
    [heir_name] = Enum.filter(@keepers, &(Process.whereis(&1) == heir))

    capture_log(fn ->
      # Stop the heir for good, then kill the owner: nobody inherits the
      # table, which is deleted (as in ETS) and recreated empty.
      :ok = Supervisor.terminate_child(PocketFlex.Supervisor, heir_name)
      [owner_name] = @keepers -- [heir_name]
      kill_and_wait_restart(owner_name)
      {:ok, _} = Supervisor.restart_child(PocketFlex.Supervisor, heir_name)
      wait_redundant()
    end)

    assert Native.get_state(id) == %{}
    assert Native.merge_state(id, %{"y" => 2}) == %{"y" => 2}
    Native.cleanup(id)
  end

  # Waits until both keepers run, one owning the table and the other its heir.
  defp wait_redundant do
    TestSupport.wait_until(fn ->
      # status/0 raises while a lost table is being recreated.
      status =
        try do
          Native.status()
        rescue
          ArgumentError -> %{redundant: false}
        end

      keepers = Enum.map(@keepers, &Process.whereis/1)

      status.redundant and Enum.all?(keepers, &(is_pid(&1) and Process.alive?(&1))) and
        Enum.sort([status.owner, status.heir]) == Enum.sort(keepers)
    end)
  end

  defmodule Boom do
    use PocketFlex.Node
    def prep(shared), do: shared
    def exec(_), do: raise("boom")
  end

  defmodule RecordId do
    use PocketFlex.Node

    def prep(_shared) do
      send(:crash_test_runner, {:flow_id, AsyncBatchFlow.current_flow_id()})
      nil
    end

    def post(shared, _, _), do: {:default, Map.put(shared, "recorded", true)}
  end

  defmodule ItemDies do
    use PocketFlex.BatchNode

    def prep(shared) do
      send(:crash_test_runner, {:flow_id, AsyncBatchFlow.current_flow_id()})
      shared["items"]
    end

    def exec_item(3), do: exit(:item_died)
    def exec_item(i), do: i
  end

  for backend <- [Native, ETS] do
    test "#{inspect(backend)}: the state is cleaned up after a failing flow" do
      Process.register(self(), :crash_test_runner)

      TestSupport.with_backend(unquote(backend), fn ->
        flow =
          Flow.new()
          |> Flow.add_node(RecordId)
          |> Flow.add_node(Boom)
          |> Flow.connect(RecordId, Boom)
          |> Flow.start(RecordId)

        assert {:error, {Boom, %RuntimeError{message: "boom"}}} =
                 Task.await(AsyncBatchFlow.run_async_batch(flow, %{"in" => 1}))

        assert_received {:flow_id, id}
        assert is_binary(id)
        assert unquote(backend).get_state(id) == %{}

        flow = Flow.new() |> Flow.add_node(RecordId) |> Flow.start(RecordId)

        assert {:ok, %{"in" => 1, "recorded" => true}} =
                 Task.await(AsyncBatchFlow.run_async_batch(flow, %{"in" => 1}))

        assert_received {:flow_id, id}
        assert unquote(backend).get_state(id) == %{}
      end)
    end
  end

  defmodule Slow do
    use PocketFlex.Node

    def prep(shared) do
      send(:crash_test_runner, {:flow_id, AsyncBatchFlow.current_flow_id()})
      Process.sleep(200)
      shared
    end
  end

  test "the state is cleaned up when the caller of run_async_batch dies mid-flow" do
    Process.register(self(), :crash_test_runner)

    flow =
      Flow.new()
      |> Flow.add_node(Slow)
      |> Flow.add_node(RecordId)
      |> Flow.connect(Slow, RecordId)
      |> Flow.start(Slow)

    caller =
      spawn(fn ->
        AsyncBatchFlow.run_async_batch(flow, %{"in" => 1})
        Process.sleep(:infinity)
      end)

    assert_receive {:flow_id, id}, 1_000
    assert Native.get_state(id) == %{"in" => 1}
    Process.exit(caller, :kill)
    # The flow stops before RecordId and cleans up.
    TestSupport.wait_until(fn -> Native.get_state(id) == %{} end)
    refute_receive {:flow_id, _}, 300
  end

  test "an item task that dies fails the flow, does not kill the caller, and cleans up" do
    Process.register(self(), :crash_test_runner)
    flow = Flow.new() |> Flow.add_node(ItemDies) |> Flow.start(ItemDies)

    capture_log(fn ->
      assert {:error, {ItemDies, {:item_exit, :item_died}}} =
               Task.await(AsyncBatchFlow.run_async_batch(flow, %{"items" => [1, 2, 3, 4]}))
    end)

    assert_received {:flow_id, id}
    assert Native.get_state(id) == %{}
  end

  defmodule BrokenStorage do
    @behaviour PocketFlex.StateStorage
    def get_state(_), do: %{}
    def update_state(_, _), do: raise("storage down")
    def merge_state(_, _), do: raise("storage down")
    def cleanup(_), do: send(:crash_test_runner, :cleanup_called) && :ok
  end

  test "a failing storage backend gives {:error, exception}, not a crash of the caller" do
    Process.register(self(), :crash_test_runner)
    flow = Flow.new() |> Flow.add_node(RecordId) |> Flow.start(RecordId)

    TestSupport.with_backend(BrokenStorage, fn ->
      assert {:error, %RuntimeError{message: "storage down"}} =
               Task.await(AsyncBatchFlow.run_async_batch(flow, %{}))
    end)

    assert_received :cleanup_called
  end
end
