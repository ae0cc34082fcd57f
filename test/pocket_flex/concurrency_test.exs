defmodule PocketFlex.ConcurrencyTest do
  use ExUnit.Case, async: true

  alias PocketFlex.StateStorage.{ETS, Native}

  # 1,000 processes wait at a barrier, then all merge their own key into
  # the same flow at once.
  defp concurrent_merges(merge, n \\ 1000) do
    parent = self()
    go = make_ref()

    pids =
      for i <- 1..n do
        spawn_link(fn ->
          receive do
            ^go -> :ok
          end

          merge.(i)
          send(parent, {:merged, i})
        end)
      end

    Enum.each(pids, &send(&1, go))
    for i <- 1..n, do: assert_receive({:merged, ^i}, 10_000)
    :ok
  end

  defp expected(n \\ 1000), do: Map.new(1..n, &{"key_#{&1}", &1})

  test "native: 1,000 concurrent merges of distinct keys lose nothing" do
    id = PocketFlex.StateStorage.generate_flow_id("conc_native")
    Native.update_state(id, %{"seed" => true})
    concurrent_merges(fn i -> Native.merge_state(id, %{"key_#{i}" => i}) end)
    assert Native.get_state(id) == Map.put(expected(), "seed", true)
    Native.cleanup(id)
  end

  test "native: every merge returns a state that contains its own key" do
    id = PocketFlex.StateStorage.generate_flow_id("conc_native_ret")
    parent = self()

    concurrent_merges(fn i ->
      merged = Native.merge_state(id, %{"key_#{i}" => i})
      send(parent, {:ret, i, Map.get(merged, "key_#{i}")})
    end)

    for i <- 1..1000, do: assert_received({:ret, ^i, ^i})
    Native.cleanup(id)
  end

  test "ETS backend: also correct, because its GenServer serialises the merges" do
    id = PocketFlex.StateStorage.generate_flow_id("conc_ets")
    concurrent_merges(fn i -> ETS.merge_state(id, %{"key_#{i}" => i}) end)
    assert ETS.get_state(id) == expected()
    ETS.cleanup(id)
  end

  test "native: many flows merged concurrently stay separate" do
    ids = for f <- 1..10, do: "conc_multi_#{f}_#{System.unique_integer([:positive])}"

    concurrent_merges(fn i ->
      Native.merge_state(Enum.at(ids, rem(i, 10)), %{"key_#{i}" => i})
    end)

    for {id, f} <- Enum.with_index(ids) do
      want = for {k, v} <- expected(), rem(v, 10) == f, into: %{}, do: {k, v}
      assert Native.get_state(id) == want
      Native.cleanup(id)
    end
  end

  test "the test detects lost updates: an unsynchronised read-merge-write loses keys" do
    # What upstream's parallel batch flow does (get, Map.merge, put from
    # each task), on the same table: at least one key is lost.
    id = PocketFlex.StateStorage.generate_flow_id("conc_racy")

    lost =
      Enum.find_value(1..20, fn _ ->
        Native.cleanup(id)

        concurrent_merges(fn i ->
          current = Native.get_state(id)
          Process.sleep(0)
          Native.update_state(id, Map.merge(current, %{"key_#{i}" => i}))
        end)

        map_size(Native.get_state(id)) < 1000
      end)

    Native.cleanup(id)
    assert lost
  end
end
