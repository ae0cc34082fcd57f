Code.require_file("support.exs", __DIR__)

defmodule PocketFlex.StateStorageConformanceTest do
  # Not async: the backend is chosen through the application environment.
  use ExUnit.Case, async: false

  alias PocketFlex.StateStorage
  alias PocketFlex.TestSupport
  alias PocketFlex.TestSupport.AgentStorage

  @backends [PocketFlex.StateStorage.Native, PocketFlex.StateStorage.ETS, AgentStorage]

  setup do
    start_supervised!(AgentStorage)
    old = Application.fetch_env(:pocket_flex, :state_storage)
    on_exit(fn -> TestSupport.restore(old) end)
    :ok
  end

  test "the backend defaults to Native and is read at every call" do
    Application.delete_env(:pocket_flex, :state_storage)
    assert StateStorage.backend() == PocketFlex.StateStorage.Native
    Application.put_env(:pocket_flex, :state_storage, AgentStorage)
    assert StateStorage.backend() == AgentStorage
    StateStorage.update_state("conf_switch", %{x: 1})
    assert AgentStorage.get_state("conf_switch") == %{x: 1}
    assert PocketFlex.StateStorage.Native.get_state("conf_switch") == %{}
  end

  for backend <- @backends do
    describe "#{inspect(backend)} through the facade" do
      setup do
        Application.put_env(:pocket_flex, :state_storage, unquote(backend))
        {:ok, id: StateStorage.generate_flow_id("conf")}
      end

      test "get_state of an unknown flow is %{}", %{id: id} do
        assert StateStorage.get_state(id) == %{}
      end

      test "update_state replaces and returns the new state", %{id: id} do
        assert StateStorage.update_state(id, %{"a" => 1, "b" => 2}) == %{"a" => 1, "b" => 2}
        assert StateStorage.update_state(id, %{"c" => 3}) == %{"c" => 3}
        assert StateStorage.get_state(id) == %{"c" => 3}
        assert StateStorage.update_state(id, %{}) == %{}
        assert StateStorage.get_state(id) == %{}
      end

      test "merge_state merges shallowly into %{} or the state and returns it", %{id: id} do
        assert StateStorage.merge_state(id, %{a: %{x: 1}, b: 1}) == %{a: %{x: 1}, b: 1}
        assert StateStorage.merge_state(id, %{a: %{y: 2}}) == %{a: %{y: 2}, b: 1}
        assert StateStorage.merge_state(id, %{}) == %{a: %{y: 2}, b: 1}
        assert StateStorage.get_state(id) == %{a: %{y: 2}, b: 1}
      end

      test "cleanup removes the state and is :ok for unknown flows", %{id: id} do
        StateStorage.update_state(id, %{a: 1})
        assert StateStorage.cleanup(id) == :ok
        assert StateStorage.get_state(id) == %{}
        assert StateStorage.cleanup(id) == :ok
        assert StateStorage.cleanup({:never, :seen}) == :ok
      end

      test "flows are independent; any term is a flow id", %{id: id} do
        other = {:flow, make_ref()}
        StateStorage.update_state(id, %{who: :first})
        StateStorage.merge_state(other, %{who: :second})
        assert StateStorage.get_state(id) == %{who: :first}
        assert StateStorage.get_state(other) == %{who: :second}
        StateStorage.cleanup(other)
        assert StateStorage.get_state(id) == %{who: :first}
      end

      test "states keep any terms as values", %{id: id} do
        big = :binary.copy("x", 100_000)
        state = %{1 => 1.0, 1.0 => -0.0, "pid" => self(), "ref" => make_ref(), "big" => big}
        assert StateStorage.update_state(id, state) == state
        assert StateStorage.get_state(id) === state
      end

      test "non-map states and updates raise ArgumentError", %{id: id} do
        StateStorage.update_state(id, %{kept: true})

        for bad <- [nil, [a: 1], {:a, 1}, "map", 42] do
          assert_raise ArgumentError, ~r/to be a map, got: /, fn ->
            StateStorage.update_state(id, bad)
          end

          assert_raise ArgumentError, ~r/to be a map, got: /, fn ->
            StateStorage.merge_state(id, bad)
          end
        end

        assert StateStorage.get_state(id) == %{kept: true}
      end

      test "1,000 concurrent merges of distinct keys into one flow lose nothing", %{id: id} do
        1..1000
        |> Enum.map(fn i -> Task.async(fn -> StateStorage.merge_state(id, %{i => i}) end) end)
        |> Enum.each(&Task.await/1)

        assert StateStorage.get_state(id) == Map.new(1..1000, &{&1, &1})
      end
    end
  end

  test "the backends called directly raise ArgumentError for non-maps too" do
    for backend <- [PocketFlex.StateStorage.Native, PocketFlex.StateStorage.ETS] do
      assert_raise ArgumentError, fn -> backend.update_state("conf_direct", :x) end
      assert_raise ArgumentError, fn -> backend.merge_state("conf_direct", [1]) end
    end
  end

  test "generate_flow_id/1 makes distinct prefixed ids" do
    ids = for _ <- 1..1000, do: StateStorage.generate_flow_id("p")
    assert length(Enum.uniq(ids)) == 1000
    assert Enum.all?(ids, &String.match?(&1, ~r/^p_\d+$/))
    assert "flow_" <> _ = StateStorage.generate_flow_id()
  end
end
