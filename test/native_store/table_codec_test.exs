defmodule NativeStore.TableCodecTest do
  @moduledoc """
  Terms through the byte format and back, against :ets: lists of every
  header size (their byte length is recorded so that they are skipped in one
  jump), improper and nested lists, and the scalars the encoder classifies
  from the term word (small integers at the immediate limits, atoms, pids).
  """
  use ExUnit.Case, async: true

  alias NativeStore.Table

  @min_small -Bitwise.bsl(1, 59)
  @max_small Bitwise.bsl(1, 59) - 1

  defp values do
    long = Enum.to_list(1..300)

    [
      [],
      [1],
      [:a | :b],
      [1, 2 | 3],
      [[], [[]], [[1 | 2]]],
      Enum.to_list(1..127),
      Enum.to_list(1..128),
      Enum.to_list(1..129),
      long,
      Enum.to_list(1..20_000),
      long ++ [:tail | "x"],
      Enum.map(1..200, &{&1, [&1, "b#{&1}"]}),
      %{list: long, small: [1, 2], nested: %{l: [long | long]}},
      {long, [long], {[long]}},
      [self(), make_ref(), 1.5, -0.0, "bin", <<1::3>>, fn -> :ok end],
      @min_small,
      @max_small,
      @min_small - 1,
      @max_small + 1,
      -9_223_372_036_854_775_808,
      9_223_372_036_854_775_807,
      Bitwise.bsl(1, 100),
      -Bitwise.bsl(1, 100),
      0,
      -1,
      :atom,
      true,
      nil,
      self(),
      [self() | self()],
      String.duplicate("z", 300)
    ]
  end

  for type <- [:set, :ordered_set, :bag, :duplicate_bag] do
    test "#{type}: objects round-trip and lists are keys like any term" do
      type = unquote(type)
      e = :ets.new(:codec, [type, :public])
      t = Table.new(:codec, [type, :public])

      objs =
        values()
        |> Enum.with_index()
        |> Enum.flat_map(fn {v, i} -> [{i, v, 0}, {v, i}, {{:k, v}, [v | v], v}] end)

      for o <- objs do
        assert Table.insert(t, o) == :ets.insert(e, o)
      end

      assert Table.info(t, :size) == :ets.info(e, :size)

      for o <- objs do
        k = elem(o, 0)
        assert Table.lookup(t, k) == :ets.lookup(e, k), inspect(k, limit: 5)
        assert Table.member(t, k) == :ets.member(e, k)
      end

      sorted = fn l -> Enum.sort_by(l, &{&1, :erlang.term_to_binary(&1)}) end
      assert sorted.(Table.tab2list(t)) == sorted.(:ets.tab2list(e))

      assert sorted.(Table.match_object(t, {:_, [:_ | :_], :_})) ==
               sorted.(:ets.match_object(e, {:_, [:_ | :_], :_}))

      if type == :ordered_set do
        assert Table.tab2list(t) == :ets.tab2list(e)
      end
    end
  end

  test "tuples of immediates (rebuilt from their words) come back as stored" do
    e = :ets.new(:codec, [:bag, :public])
    t = Table.new(:codec, [:bag, :public])
    me = self()

    objs = [
      {1},
      {2, []},
      {3, :a, me, [], nil, true},
      {4, @min_small, @max_small, -1, 0, 1, :x, me},
      {5, @min_small - 1, @max_small + 1},
      {6, 1, 2, 3, 4, 5, 6, 7, 8},
      {7, [], [1], {}, {1}},
      {8, 1.0, "b", [1 | 2]},
      {@max_small, @min_small},
      # Maps of immediates (built from their words too), and the shapes
      # that fall back to the general decoder.
      {9, %{a: 1, b: 2, c: 3, d: 4}, 0},
      {10, %{}, %{me => [], 1 => :x}, 7},
      {11, %{a: 1}, "bin"},
      {12, %{a: "bin"}, 1},
      {13, %{a: 1}, %{b: 1.5}},
      {14, %{a: @max_small + 1}, 1},
      {15, Map.new(1..16, &{&1, &1}), Map.new(1..17, &{&1, &1}), Map.new(1..40, &{&1, &1})},
      {16, %{a: 1}, @max_small + 1}
    ]

    for o <- objs, do: {Table.insert(t, o), :ets.insert(e, o)}

    for k <- Enum.map(objs, &elem(&1, 0)) do
      assert Table.lookup(t, k) === :ets.lookup(e, k), inspect(k)
    end
  end

  test "short binaries and small tuples as keys and in objects (encoded and rebuilt on fast paths) are found and come back as stored" do
    b127 = :binary.copy("x", 127)
    b128 = :binary.copy("y", 128)
    sub = binary_part("abcdefgh", 2, 3)

    keys = [
      "",
      "k",
      b127,
      b128,
      sub,
      {:users, "id-1"},
      {:users, ""},
      {:orders, b127},
      {:orders, b128},
      {"a", "b", 1, :c, []},
      {"a", 1.5},
      {"a", <<1::3>>},
      {%{a: 1}, "m"},
      {"m", %{a: "x"}},
      {"m", %{a: 1}, "n"},
      # Keys encoded on the stack up to 64 bytes (a tuple header, an atom,
      # and a binary of 51 bytes fill them), in full past that; pids,
      # `[]`, small integers at their limits; bignums, floats, nested
      # tuples, 9-element tuples and ports fall back to the full encoder.
      {:users, :binary.copy("z", 51)},
      {:users, :binary.copy("z", 52)},
      {self(), [], @min_small, @max_small},
      {[], @min_small - 1},
      {@max_small + 1},
      {},
      {[]},
      {1, 2, 3, 4, 5, 6},
      {1, 2, 3, 4, 5, 6, 7, 8},
      {1, 2, 3, 4, 5, 6, 7, 8, 9},
      {{:nested}, "x"},
      {:a, 1.0},
      {:a, -0.0},
      {hd(Port.list()), "p"}
    ]

    for type <- [:set, :ordered_set, :bag] do
      e = :ets.new(:codec_bin, [type, :public])
      t = Table.new(:codec_bin, [type, :public])
      objs = for {k, i} <- Enum.with_index(keys), do: {k, i, "v#{i}", {"w", i}}
      for o <- objs, do: {Table.insert(t, o), :ets.insert(e, o)}

      for k <- keys do
        assert Table.lookup(t, k) === :ets.lookup(e, k), "#{type} #{inspect(k)}"

        assert Table.member(t, k) and
                 Table.lookup_element(t, k, 3) === :ets.lookup_element(e, k, 3)
      end

      # Keys equal to stored ones but built here (other binaries, other
      # tuples) are found too; near misses are not.
      for k <- keys, is_tuple(k) or is_binary(k) do
        copy = :erlang.binary_to_term(:erlang.term_to_binary(k))
        assert Table.lookup(t, copy) === :ets.lookup(e, copy), "#{type} #{inspect(k)}"
      end

      for miss <- [{:users, "id-2"}, {:users, "id-1", 1}, "kk", {1, 2, 3, 4, 5, 7}, {self()}] do
        assert Table.lookup(t, miss) === :ets.lookup(e, miss), "#{type} #{inspect(miss)}"
      end

      if type == :ordered_set do
        assert walk(Table, t, Table.first(t)) === walk(:ets, e, :ets.first(e))

        assert Table.select(t, [{{:"$1", :_, :_, :_}, [], [:"$1"]}], 4) |> elem(0) ===
                 :ets.select(e, [{{:"$1", :_, :_, :_}, [], [:"$1"]}], 4) |> elem(0)
      end

      assert Enum.sort(walk(Table, t, Table.first(t))) === Enum.sort(keys)
    end
  end

  defp walk(_m, _t, :"$end_of_table"), do: []
  defp walk(m, t, k), do: [k | walk(m, t, m.next(t, k))]

  test "counters and elements after long lists, whatever their header size" do
    e = :ets.new(:codec, [:set, :public])
    t = Table.new(:codec, [:set, :public])

    for {v, i} <- Enum.with_index(values()) do
      o = {i, v, [v], %{v => v}, 10}
      assert Table.insert(t, o) == :ets.insert(e, o)
      assert Table.update_counter(t, i, {5, 7}) == :ets.update_counter(e, i, {5, 7})

      assert Table.update_counter(t, i, [{5, 1}, {5, -3, 0, 100}]) ==
               :ets.update_counter(e, i, [{5, 1}, {5, -3, 0, 100}])

      for pos <- 1..5 do
        assert Table.lookup_element(t, i, pos) == :ets.lookup_element(e, i, pos)
      end

      assert Table.update_element(t, i, [{3, v}, {2, :x}]) ==
               :ets.update_element(e, i, [{3, v}, {2, :x}])

      assert Table.lookup(t, i) == :ets.lookup(e, i)

      assert_raise ArgumentError, fn -> Table.update_counter(t, i, {2, 1}) end
      assert Table.lookup(t, i) == :ets.lookup(e, i)
    end
  end

  test "replace compares the stored bytes with the expected term exactly" do
    t = Table.new(:codec, [:set, :public])
    vs = values()

    for {v, i} <- Enum.with_index(vs) do
      o = {i, v, [v | v], %{v => [v]}}
      assert Table.insert(t, o)
      # Every other value (and near misses) is a mismatch.
      for w <- [[v], {v}, [v | :x]] ++ Enum.reject(vs, &(&1 === v)) do
        refute Table.replace(t, i, [{i, w, [v | v], %{v => [v]}}], [{i, :never}])
        refute Table.replace(t, i, [{i, v, [w | v], %{v => [v]}}], [{i, :never}])
      end

      assert Table.lookup(t, i) == [o]
      assert Table.replace(t, i, [o], [{i, :swapped}])
      assert Table.lookup(t, i) == [{i, :swapped}]
    end
  end

  test "maps of every size, built in different ways, are the same keys" do
    e = :ets.new(:codec, [:set, :public])
    t = Table.new(:codec, [:set, :public])

    for n <- [0, 1, 2, 31, 32, 33, 40, 100] do
      fresh = Map.new(1..n//1, &{&1, [&1]})
      grown = Enum.reduce(1..n//1, %{}, &Map.put(&2, &1, [&1]))
      shrunk = Map.drop(Map.new(1..(n + 40), &{&1, [&1]}), Enum.to_list((n + 1)..(n + 40)))
      nested = %{fresh => %{n => fresh}, [n] => {fresh}}

      for m <- [fresh, grown, shrunk] do
        assert m == fresh
        o = {m, nested, n}
        assert Table.insert(t, o) == :ets.insert(e, o)
        assert Table.lookup(t, fresh) == :ets.lookup(e, fresh)
        assert Table.lookup(t, m) == :ets.lookup(e, m)
        assert Table.update_counter(t, m, {3, 1}) == :ets.update_counter(e, m, {3, 1})
        assert Table.replace(t, fresh, :ets.lookup(e, fresh), [{m, n}])
        :ets.insert(e, {m, n})
      end

      assert Table.info(t, :size) == :ets.info(e, :size)
    end

    assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
  end
end
