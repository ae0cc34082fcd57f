defmodule NativeStore.TableSelectTest do
  @moduledoc """
  Match specifications, selects and folds of `NativeStore.Table` against
  `:ets`: a differential test with random objects and random match specs
  (every result and every raised exception module must agree), plus the
  bound-key-does-not-scan check.

  Replay one failing case with

      SEED=1234 mix test test/native_store/table_select_test.exs

  Knobs: `SEED` (only that seed), `SEEDS` (default 150), `OPS` (operations
  per seed, default 120).
  """
  use ExUnit.Case, async: true

  import NativeStore.Test.Differential
  alias NativeStore.Table
  alias NativeStore.Table.Match

  @moduletag timeout: 300_000

  # Table types NativeStore supports today (others are added as they land).
  defp types do
    for type <- [:set, :ordered_set, :bag, :duplicate_bag],
        (try do
           Table.delete(Table.new(:probe, [type]))
         rescue
           ArgumentError -> false
         end) do
      type
    end
  end

  # ------------------------------------------------------------------
  # Differential test

  test "random match specs agree with :ets on every function" do
    types = types()
    n = ops_per_seed(120)

    {micros, total} =
      :timer.tc(fn -> Enum.reduce(seeds(150), 0, &(run_seed(&1, types, n) + &2)) end)

    IO.puts(
      "\n[select differential] #{total} operations, types #{inspect(types)}, " <>
        "in #{div(micros, 1000)} ms"
    )
  end

  defp run_seed(seed, types, n) do
    :rand.seed(:exsss, {seed, seed * 3 + 1, seed * 11 + 5})
    type = Enum.at(types, rem(seed, length(types)))
    keypos = pick([1, 1, 2])
    # Half the ordered_sets have write_concurrency, their key ranges split
    # into up to 16 parts once filled: walks and continuations cross parts.
    parted = type == :ordered_set and rem(div(seed, length(types)), 2) == 1

    opts =
      [type, :public, {:keypos, keypos}] ++ if parted, do: [{:write_concurrency, true}], else: []

    ets = :ets.new(:select_oracle, opts)
    nst = Table.new(:select_native, opts)
    # Some seeds have more objects than one chunk (2000) holds.
    size = if rem(seed, 10) == 0, do: int(2000, 4500), else: int(0, 60)
    # A few groups of terms kept in external format (funs capturing ±0.0,
    # refs, ports, deep tuples...), each group one term made differently.
    # Bags get one spelling (see the "bag object equality" known limitation
    # in table_known_bugs_test.exs).
    groups = ext_key_groups()
    ext = for _ <- 1..4, do: pick(groups)

    ext =
      if type in [:set, :ordered_set],
        do: Enum.concat(ext),
        else: Enum.map(ext, &hd/1)

    ctx = %{seed: seed, type: type, keypos: keypos, opts: opts, pool: pool() ++ ext}
    objs = for _ <- 1..size//1, do: gen_object(ctx)
    # One by one: with duplicate keys in one list, which object a set keeps
    # is undefined (a long :ets.insert/2 list yields, and then varies).
    Enum.each(objs, &:ets.insert(ets, &1))
    Enum.each(objs, &Table.insert(nst, &1))
    if parted, do: for(_ <- 1..int(1, 4), do: NativeStore.Nif.table_split_parts(nst))

    try do
      for i <- 1..n do
        op = gen_op(ctx)
        compare!(ctx, i, op, ets, nst)
      end

      compare!(ctx, n + 1, {:tab2list}, ets, nst)
      n + 1
    after
      :ets.delete(ets)
      Table.delete(nst)
    end
  end

  defp compare!(ctx, i, op, ets, nst) do
    expected = run(:ets, ets, op, ctx)
    actual = run(Table, nst, op, ctx)

    unless same?(expected, actual) do
      flunk("""
      NativeStore.Table differs from :ets
        seed:    #{ctx.seed}   (replay: SEED=#{ctx.seed} mix test #{__ENV__.file})
        options: #{inspect(ctx.opts)}
        op ##{i}: #{inspect(op, limit: :infinity, printable_limit: 200)}
        :ets:    #{inspect(expected, limit: 200, printable_limit: 200)}
        native:  #{inspect(actual, limit: 200, printable_limit: 200)}
        objects only in :ets:   #{inspect(:ets.tab2list(ets) -- Table.tab2list(nst), limit: 50)}
        objects only in native: #{inspect(Table.tab2list(nst) -- :ets.tab2list(ets), limit: 50)}
      """)
    end
  end

  defp run(mod, tab, op, ctx), do: outcome(fn -> apply_op(mod, tab, op, ctx) end)

  # Results of set and bag tables are compared sorted; ordered_set ones in
  # the order they came.
  defp norm(list, %{type: :ordered_set}), do: list
  defp norm(list, _ctx), do: canonical_sort(list)

  defp apply_op(m, t, {:select, ms}, c), do: norm(m.select(t, ms), c)
  defp apply_op(m, t, {:select_reverse, ms}, c), do: norm(m.select_reverse(t, ms), c)
  defp apply_op(m, t, {:select_count, ms}, _c), do: m.select_count(t, ms)
  defp apply_op(m, t, {:match, p}, c), do: norm(m.match(t, p), c)
  defp apply_op(m, t, {:match_object, p}, c), do: norm(m.match_object(t, p), c)

  defp apply_op(m, t, {:select_delete, ms}, c),
    do: {m.select_delete(t, ms), norm(m.tab2list(t), c)}

  defp apply_op(m, t, {:match_delete, p}, c), do: {m.match_delete(t, p), norm(m.tab2list(t), c)}

  defp apply_op(m, t, {:select_replace, ms}, c),
    do: {m.select_replace(t, ms), norm(m.tab2list(t), c)}

  defp apply_op(m, t, {:select, ms, limit}, c), do: drain(m, m.select(t, ms, limit), c)

  defp apply_op(m, t, {:select_reverse, ms, limit}, c),
    do: drain(m, m.select_reverse(t, ms, limit), c)

  defp apply_op(m, t, {:match, p, limit}, c), do: drain(m, m.match(t, p, limit), c)
  defp apply_op(m, t, {:match_object, p, limit}, c), do: drain(m, m.match_object(t, p, limit), c)

  defp apply_op(m, t, {:foldl}, c), do: norm(m.foldl(&[&1 | &2], [], t), c)
  defp apply_op(m, t, {:foldr}, c), do: norm(m.foldr(&[&1 | &2], [], t), c)
  defp apply_op(m, t, {:fold_bad_fun}, _c), do: m.foldl(:not_a_fun, :acc, t)
  defp apply_op(m, t, {:insert, objs}, _c), do: m.insert(t, objs)
  defp apply_op(m, t, {:delete, k}, _c), do: m.delete(t, k)
  defp apply_op(m, t, {:tab2list}, _c), do: canonical_sort(m.tab2list(t))

  defp apply_op(m, t, {:select_then_garbage, ms}, _c) do
    {_, cont} = m.select(t, ms, 1)
    m.select({:bad, cont})
  end

  # Drains a limited select: the chunk lengths and all results (sorted for
  # set tables). Every chunk but the last must hold exactly `limit` results.
  defp drain(m, first, c), do: drain(m, first, c, [], [])

  defp drain(_m, :"$end_of_table", c, lens, acc),
    do: {Enum.reverse(lens), norm(Enum.concat(Enum.reverse(acc)), c)}

  defp drain(m, {results, cont}, c, lens, acc),
    do: drain(m, m.select(cont), c, [length(results) | lens], [results | acc])

  # ------------------------------------------------------------------
  # Generators (pick/1, chance/1 and int/2 come from
  # NativeStore.Test.Differential)

  defp pool do
    [
      1,
      1.0,
      0,
      0.0,
      -0.0,
      2,
      3,
      4,
      5,
      7,
      -1,
      2.5,
      :a,
      :b,
      nil,
      true,
      "a",
      "abc",
      <<1, 2, 3>>,
      # Large binaries (values of sets keep them out of line).
      :binary.copy("xy", 50),
      :binary.copy("z", 1000),
      {1},
      {1.0},
      {:a, 1},
      {:a, {:b, 2}},
      [1, 2],
      [],
      %{},
      %{a: 1},
      %{a: 1.0},
      %{1 => :x},
      %{a: %{b: 2}},
      self(),
      make_ref(),
      1_180_591_620_717_411_303_424
    ]
  end

  defp value(ctx) do
    case int(1, 10) do
      n when n <= 6 -> pick(ctx.pool)
      7 -> int(-10, 100)
      8 -> {pick(ctx.pool), pick(ctx.pool)}
      9 -> %{k: pick(ctx.pool)}
      10 -> [pick(ctx.pool)]
    end
  end

  defp gen_object(ctx) do
    size = ctx.keypos + int(0, 2)
    size = max(size, 1)
    List.to_tuple(for _ <- 1..size, do: value(ctx))
  end

  # Which of several objects with one key a list insert keeps in a set or
  # an ordered_set is undefined in ETS (it depends on how the insert is
  # scheduled: SEED=1261 failed about one run in three): one object per key.
  defp insert_list(%{type: :set} = ctx, objs), do: distinct_keys(objs, ctx.keypos, &(&1 === &2))

  defp insert_list(%{type: :ordered_set} = ctx, objs),
    do: distinct_keys(objs, ctx.keypos, &(&1 == &2))

  defp insert_list(_ctx, objs), do: objs

  defp gen_op(ctx) do
    case int(1, 100) do
      n when n <= 14 -> {:select, gen_spec(ctx)}
      n when n <= 20 -> {:select_reverse, gen_spec(ctx)}
      n when n <= 28 -> {:select_count, gen_spec(ctx, :bool)}
      n when n <= 34 -> {:match, gen_head(ctx) |> elem(0)}
      n when n <= 40 -> {:match_object, gen_head(ctx) |> elem(0)}
      n when n <= 48 -> {:select, gen_spec(ctx), int(1, 7)}
      n when n <= 52 -> {:select_reverse, gen_spec(ctx), int(1, 7)}
      n when n <= 55 -> {:match, gen_head(ctx) |> elem(0), int(1, 5)}
      n when n <= 58 -> {:match_object, gen_head(ctx) |> elem(0), int(1, 5)}
      n when n <= 63 -> {:select_delete, gen_spec(ctx, :bool)}
      n when n <= 65 -> {:match_delete, gen_head(ctx) |> elem(0)}
      n when n <= 72 -> {:select_replace, gen_replace_spec(ctx)}
      n when n <= 74 -> {:foldl}
      n when n <= 76 -> {:foldr}
      77 -> {:fold_bad_fun}
      n when n <= 82 -> {:select, gen_bad_spec(ctx)}
      83 -> {:select, gen_spec(ctx), pick([0, -1, :x, 1.0])}
      84 -> {:select_then_garbage, [{:_, [], [:"$_"]}]}
      n when n <= 94 -> {:insert, insert_list(ctx, for(_ <- 1..int(1, 5), do: gen_object(ctx)))}
      _ -> {:delete, value(ctx)}
    end
  end

  @vars [:"$1", :"$2", :"$3", :"$4"]

  # A head (pattern) and the variables it binds.
  defp gen_head(ctx) do
    case int(1, 20) do
      1 ->
        {:_, []}

      2 ->
        {:"$1", [:"$1"]}

      _ ->
        size = if chance(0.85), do: ctx.keypos + int(0, 2), else: int(1, 4)

        {elems, vars} =
          Enum.map_reduce(1..size, [], fn i, vars ->
            {p, vs} = if i == ctx.keypos, do: key_pattern(ctx), else: elem_pattern(ctx)
            # Known gaps, not mirrored: ETS's ordered_set treats a map in the
            # key pattern as bound in select/3 but not in select/2; its hash
            # tables treat a variable-free map in the key pattern as a bound
            # key but then match the pattern against every object in that
            # key's hash slot, so unrelated map keys that share the slot
            # (which depends on its internal layout) match too.
            p = if i == ctx.keypos and map_inside?(p), do: :_, else: p

            {p, vs ++ vars}
          end)

        {List.to_tuple(elems), Enum.uniq(vars)}
    end
  end

  defp key_pattern(ctx) do
    case int(1, 10) do
      n when n <= 5 -> {value(ctx), []}
      n when n <= 7 -> var_pattern()
      8 -> {:_, []}
      9 -> {{:a, :_}, []}
      10 -> {{pick(ctx.pool), :"$4"}, [:"$4"]}
    end
  end

  defp elem_pattern(ctx) do
    case int(1, 10) do
      n when n <= 4 -> var_pattern()
      n when n <= 6 -> {:_, []}
      7 -> {value(ctx), []}
      8 -> {{:_, :"$3"}, [:"$3"]}
      9 -> {%{a: :"$2"}, [:"$2"]}
      10 -> {[:"$3" | :_], [:"$3"]}
    end
  end

  defp map_inside?(m) when is_map(m), do: true
  defp map_inside?(t) when is_tuple(t), do: t |> Tuple.to_list() |> map_inside?()
  defp map_inside?([h | t]), do: map_inside?(h) or map_inside?(t)
  defp map_inside?(_), do: false

  defp var_pattern do
    v = pick(@vars)
    {v, [v]}
  end

  defp gen_spec(ctx, body_kind \\ :any) do
    for _ <- 1..int(1, 3) do
      {head, vars} = gen_head(ctx)
      {head, gen_guards(vars), gen_body(vars, body_kind)}
    end
  end

  defp gen_guards([]), do: if(chance(0.2), do: [true], else: [])

  defp gen_guards(vars) do
    for _ <- 1..int(0, 2)//1, do: gen_guard(vars)
  end

  defp gen_guard(vars) do
    v = pick(vars)

    case int(1, 15) do
      # (Comparisons with numbers are also checked natively before objects
      # are decoded: both sides, floats, `{:const, n}`.)
      13 -> {:<, 2.5, v}
      14 -> {:>=, v, pick([-1, 1.0, 4])}
      15 -> {:"=<", v, {:const, 7}}
      1 -> {:>, v, 3}
      2 -> {:is_integer, v}
      3 -> {:andalso, {:is_number, v}, {:<, v, 50}}
      4 -> {:orelse, {:is_atom, v}, {:"=:=", v, 1.0}}
      5 -> {:==, v, 1}
      6 -> {:"=:=", v, 1}
      7 -> {:is_map, v}
      8 -> {:is_tuple, v}
      9 -> {:==, {:element, 1, v}, :a}
      10 -> {:not, {:is_binary, v}}
      11 -> {:"=<", {:+, v, 1}, 5}
      12 -> {:andalso, {:is_map, v}, {:is_map_key, :a, v}}
    end
  end

  defp gen_body(vars, :bool) do
    case int(1, 6) do
      n when n <= 3 -> [true]
      4 -> [false]
      5 when vars != [] -> [{:is_integer, pick(vars)}]
      _ -> [:"$_"]
    end
  end

  defp gen_body(vars, :any) do
    case int(1, 11) do
      1 -> [:"$_"]
      2 -> [:"$$"]
      3 when vars != [] -> [{{pick(vars)}}]
      4 when vars != [] -> [pick(vars)]
      5 -> [true]
      6 -> [false]
      7 -> [{:const, {:c, 1.0}}]
      8 -> [{:element, 5, :"$_"}]
      9 when vars != [] -> [{{pick(vars), :"$_", [pick(vars)]}}]
      10 -> [{:element, 1, :"$_"}, :"$$"]
      _ -> [:"$_"]
    end
  end

  # Mostly specs that keep the key, some that do not (ArgumentError).
  defp gen_replace_spec(ctx) do
    for _ <- 1..int(1, 2) do
      kp = ctx.keypos
      size = kp + int(0, 2)

      head =
        List.to_tuple(
          for i <- 1..size do
            if i == kp,
              do: pick([:"$1", :"$1", value(ctx), {:"$1", :a}, [:"$1" | value(ctx)]]),
              else: pick([:"$2", :_, :"$3"])
          end
        )

      vars = head |> Tuple.to_list() |> Enum.filter(&(&1 in @vars))
      key = elem(head, kp - 1)

      new_key =
        case int(1, 10) do
          n when n <= 4 -> key
          n when n <= 6 -> rebuild(key)
          7 -> {:const, key}
          8 -> {:element, kp, :"$_"}
          9 -> :changed
          10 -> {:const, :other}
        end

      new =
        List.to_tuple(
          for i <- 1..(kp + int(0, 2)) do
            cond do
              i == kp -> new_key
              vars != [] and chance(0.5) -> pick(vars)
              true -> {:const, value(ctx)}
            end
          end
        )

      body =
        case int(1, 10) do
          1 -> [:"$_"]
          2 -> [{new}, {new}]
          _ -> [{new}]
        end

      {head, gen_guards(vars), body}
    end
  end

  # A body expression that rebuilds the head pattern `h` (as ETS requires
  # of select_replace), ground parts sometimes as {:const, term}.
  defp rebuild(h) when is_tuple(h),
    do: {h |> Tuple.to_list() |> Enum.map(&rebuild/1) |> List.to_tuple()}

  defp rebuild([a | b]), do: [rebuild(a) | rebuild(b)]
  defp rebuild(h), do: if(chance(0.3), do: {:const, h}, else: h)

  defp gen_bad_spec(ctx) do
    case int(1, 9) do
      1 -> :not_a_list
      2 -> [{:_, [], [:"$_"]} | :improper]
      3 -> [{:_, [], []}]
      4 -> [{:_, [], :not_a_list}]
      5 -> [{{:"$1"}, [{:no_such_guard, :"$1"}], [:"$1"]}]
      6 -> [{{:"$1"}, [], [:"$2"]}]
      7 -> [{:_, []}]
      8 -> [[]]
      9 -> [{gen_head(ctx) |> elem(0), [{:>, :"$9", 1}], [true]}]
    end
  end

  # ------------------------------------------------------------------
  # Deterministic cases

  test "fun2ms-produced specs (via ms_transform) give :ets's results" do
    funs = [
      ~c"fun({K, V}) when V > 3, is_integer(K) -> {K, V * 2}; ({K, _}) -> K end.",
      ~c"fun({K, V} = O) when is_map(V) -> O end.",
      ~C"fun({K, #{a := A}}) -> {A, K} end.",
      ~c"fun({1, V}) -> V end.",
      ~c"fun({K, V}) when K == 1 -> V end.",
      ~c"fun({K, V}) when V =:= 1.0 orelse V == a -> [K] end.",
      ~c"fun(X) when element(1, X) > 2 -> X end."
    ]

    e = :ets.new(:fun2ms, [:public])
    t = Table.new(:fun2ms, [:public])

    objs = [
      {1, 5},
      {1.0, 7},
      {2, 1.0},
      {3, %{a: :x}},
      {:k, :a},
      {{:t, 1}, 4},
      {5, %{b: 1}},
      {6, 2}
    ]

    :ets.insert(e, objs)
    Table.insert(t, objs)

    for src <- funs do
      {:ok, toks, _} = :erl_scan.string(src)
      {:ok, [{:fun, _, {:clauses, clauses}}]} = :erl_parse.parse_exprs(toks)
      ms = :ms_transform.transform_from_shell(:ets, clauses, [])
      assert canonical_sort(Table.select(t, ms)) == canonical_sort(:ets.select(e, ms)), src
      assert Table.select_count(t, ms) == :ets.select_count(e, ms)
    end
  end

  test "empty specs, errors and continuations at the edges" do
    e = :ets.new(:edges, [:public])
    t = Table.new(:edges, [:public])

    :ets.insert(e, [{1, :a}, {2, :b}])
    Table.insert(t, [{1, :a}, {2, :b}])

    for {f, args} <- [
          select: [[]],
          select_reverse: [[]],
          select_count: [[]],
          select_delete: [[]],
          select_replace: [[]],
          select: [[], 3],
          match: [{:_, :"$1"}, 5],
          select: [[{:_, [], [:"$_"]}], 2],
          # Limits: positive small integers only.
          select: [[{:_, [], [:"$_"]}], 0],
          select: [[{:_, [], [:"$_"]}], 576_460_752_303_423_487],
          select: [[{:_, [], [:"$_"]}], 576_460_752_303_423_488],
          select_reverse: [[{:_, [], [:"$_"]}], 576_460_752_303_423_488],
          match: [{:_, :"$1"}, 576_460_752_303_423_488],
          match_object: [{:_, :_}, -1]
        ] do
      assert outcome(fn -> apply(Table, f, [t | args]) end) |> shape() ==
               outcome(fn -> apply(:ets, f, [e | args]) end) |> shape(),
             "#{f} #{inspect(args)}"
    end

    assert Table.select(:"$end_of_table") == :"$end_of_table"
    assert_raise ArgumentError, fn -> Table.select(:garbage) end
    assert_raise ArgumentError, fn -> Table.match({:garbage}) end

    # A continuation of a deleted table raises, as in ETS.
    {[_], cont} = Table.select(t, [{:_, [], [:"$_"]}], 1)
    Table.delete(t)
    assert_raise ArgumentError, fn -> Table.select(cont) end
    assert_raise ArgumentError, fn -> Table.select(t, [{:_, [], [:"$_"]}]) end
    assert_raise ArgumentError, fn -> Table.select(t, []) end
    assert_raise ArgumentError, fn -> Table.foldl(fn _, a -> a end, 0, t) end
    assert_raise ArgumentError, fn -> Table.foldr(fn _, a -> a end, 0, t) end
  end

  test "select_replace/2 on a duplicate_bag is atomic against other writers of the key, as in ETS" do
    # One process rewrites every integer-tagged object of :k 100 times while
    # another inserts and deletes other objects of :k. Taking the key's
    # objects and inserting them back resurrected objects deleted in
    # between; the rewrite is now swapped in only if the key is unchanged.
    spec = [{{:k, :"$1", :"$2"}, [{:is_integer, :"$1"}], [{{:k, :"$1", {:+, :"$2", 1}}}]}]

    for mod <- [:ets, Table] do
      t = mod.new(:sr_bag, [:duplicate_bag, :public])
      mod.insert(t, for(i <- 1..50, do: {:k, i, 0}))

      other =
        Task.async(fn ->
          for j <- 1..3000 do
            mod.insert(t, {:k, :tmp, j})
            mod.delete_object(t, {:k, :tmp, j})
          end
        end)

      for _ <- 1..100, do: assert(mod.select_replace(t, spec) == 50)
      Task.await(other, 30_000)
      objs = mod.lookup(t, :k)
      assert Enum.sort(objs) == for(i <- 1..50, do: {:k, i, 100}), inspect(mod)
      mod.delete(t)
    end
  end

  test "select_replace/2 on a duplicate_bag is not starved by a process inserting under the key" do
    # Found by review: the swap needed the key's objects unchanged, so a
    # writer appending under the key made it retry (on a longer list) until
    # the writer stopped. Appended objects now stay after the rewritten ones.
    t = Table.new(:sr_starve, [:duplicate_bag, :public])
    Table.insert(t, for(i <- 1..2000, do: {1, i, :old}))
    flag = :atomics.new(1, [])

    writer =
      Task.async(fn ->
        deadline = System.monotonic_time(:millisecond) + 5000

        Enum.reduce_while(Stream.iterate(1, &(&1 + 1)), 0, fn i, _ ->
          Table.insert(t, {1, -i, :w})

          cond do
            :atomics.get(flag, 1) == 1 -> {:halt, i}
            System.monotonic_time(:millisecond) > deadline -> {:halt, :timed_out}
            true -> {:cont, i}
          end
        end)
      end)

    Process.sleep(20)
    ms = [{{:"$1", :"$2", :old}, [], [{{:"$1", :"$2", :new}}]}]
    assert Table.select_replace(t, ms) == 2000
    :atomics.put(flag, 1, 1)
    assert is_integer(Task.await(writer, 10_000)), "select_replace waited for the writer to stop"
    objs = Table.lookup(t, 1)
    assert Enum.take(objs, 2000) == for(i <- 1..2000, do: {1, i, :new})
    assert Enum.all?(Enum.drop(objs, 2000), &match?({1, _, :w}, &1))
  end

  test "select/3, select_reverse/3, match/3, match_object/3 with pre-filtered specs page as ETS" do
    # Literals and number guards let the NIF leave objects out of each
    # chunk (see `prefilter/1`): pages, their order and the end marker stay
    # ETS's, over tables of several chunks, for every type.
    objs =
      for i <- 1..6_000, do: {rem(i * 7919, 6_000), rem(i, 50), Enum.at([:a, :b, :c], rem(i, 3))}

    specs = [
      [{{:"$1", :"$2", :b}, [{:<, :"$2", 10}], [:"$1"]}],
      [{{:"$1", 7, :_}, [], [:"$_"]}],
      [
        {{:"$1", :"$2", :_}, [{:>=, :"$2", 45.5}], [{{:"$2", :"$1"}}]},
        {{:"$1", 3, :c}, [], [:"$1"]}
      ],
      [{{:_, :_, :zzz}, [], [true]}]
    ]

    for type <- [:set, :ordered_set, :bag, :duplicate_bag] do
      e = :ets.new(:pf_pages, [type, :public])
      t = Table.new(:pf_pages, [type, :public])
      :ets.insert(e, objs)
      Table.insert(t, objs)
      c = %{type: type}

      for spec <- specs, limit <- [1, 7, 100, 2_500] do
        for f <- [:select, :select_reverse] do
          assert drain(Table, apply(Table, f, [t, spec, limit]), c) ==
                   drain(:ets, apply(:ets, f, [e, spec, limit]), c),
                 "#{type} #{f} #{inspect(spec)} #{limit}"
        end
      end

      for pattern <- [{:_, 7, :_}, {:"$1", 12, :a}], limit <- [3, 500] do
        assert drain(Table, Table.match(t, pattern, limit), c) ==
                 drain(:ets, :ets.match(e, pattern, limit), c)

        assert drain(Table, Table.match_object(t, pattern, limit), c) ==
                 drain(:ets, :ets.match_object(e, pattern, limit), c)
      end

      :ets.delete(e)
      Table.delete(t)
    end
  end

  test "a named table deleted and created again: an ordered_set's continuation goes on in it, as in ETS" do
    # ETS's ordered_set continuation holds the name it was made with and
    # the last key; a hash table's holds the table, so it raises.
    first = [
      select: &[&1.select(&2, [{{:"$1", :_}, [], [:"$1"]}], 10)],
      select_reverse: &[&1.select_reverse(&2, [{{:"$1", :_}, [], [:"$1"]}], 10)],
      match: &[&1.match(&2, {:"$1", :_}, 10)],
      match_object: &[&1.match_object(&2, {:_, :_}, 10)],
      # Specs whose scans are pre-filtered (the filter goes on with the
      # continuation; every object matches, so nothing is buffered).
      select_guard: &[&1.select(&2, [{{:"$1", :"$2"}, [{:>, :"$2", 0}], [:"$1"]}], 10)],
      select_reverse_guard:
        &[&1.select_reverse(&2, [{{:"$1", :"$2"}, [{:<, :"$2", 1000}], [:"$1"]}], 10)]
    ]

    again = fn
      m, :select_guard, c -> m.select(c)
      m, :select_reverse_guard, c -> m.select_reverse(c)
      m, :match, c -> m.match(c)
      m, :match_object, c -> m.match_object(c)
      m, :select_reverse, c -> m.select_reverse(c)
      m, :select, c -> m.select(c)
    end

    for {name, start} <- first,
        type <- [:ordered_set, :set],
        type2 <- [:ordered_set, :set, :none] do
      run = fn mod ->
        mod.new(:cont_again, [type, :named_table, :public])
        mod.insert(:cont_again, for(i <- 1..100, do: {i, i}))
        [{_, c}] = start.(mod, :cont_again)
        mod.delete(:cont_again)

        if type2 != :none do
          mod.new(:cont_again, [type2, :named_table, :public])
          mod.insert(:cont_again, for(i <- 1..100, do: {i * 3, i}))
        end

        result =
          try do
            case again.(mod, name, c) do
              {l, _continuation} -> {:ok, if(type2 == :set, do: Enum.sort(l), else: l)}
              end_of_table -> {:ok, end_of_table}
            end
          rescue
            e -> {:raise, e.__struct__}
          end

        if type2 != :none, do: mod.delete(:cont_again)
        result
      end

      assert run.(Table) == run.(:ets), inspect({name, type, type2})
    end
  end

  test "a continuation never returns objects of a table deleted under its name" do
    # Found by review: results buffered in the continuation (chunks double
    # past the limit) came from the deleted table. ETS goes on in the new
    # table; NativeStore does so when nothing read is left to return, and
    # raises otherwise, or for a looked-up key.
    for type <- [:ordered_set, :set, :duplicate_bag], steps <- 0..3, bound? <- [false, true] do
      Table.new(:rb_again, [type, :named_table, :public])
      Table.insert(:rb_again, for(i <- 1..1000, do: {i, :old}))

      if type != :ordered_set and type != :set,
        do: Table.insert(:rb_again, for(j <- 1..40, do: {500, {:old, j}}))

      # (A bound key: 40 objects under it in the duplicate_bag.)
      ms = [{{if(bound?, do: 500, else: :_), :_}, [], [:"$_"]}]
      {_, c} = Table.select_reverse(:rb_again, ms, 3)

      c =
        Enum.reduce(1..steps//1, c, fn
          _, :"$end_of_table" -> :"$end_of_table"
          _, c -> elem(Table.select_reverse(c), 1)
        end)

      Table.delete(:rb_again)
      Table.new(:rb_again, [type, :named_table, :public])
      Table.insert(:rb_again, for(i <- 1..1000, do: {i, :new}))

      result =
        try do
          Table.select_reverse(c)
        rescue
          ArgumentError -> :raised
        end

      case result do
        :raised ->
          :ok

        :"$end_of_table" ->
          :ok

        {objs, _} ->
          assert Enum.all?(objs, &match?({_, :new}, &1)), inspect({type, steps, bound?})
      end

      Table.delete(:rb_again)
    end
  end

  test "continuations are values: each use continues from the same place, as in ETS" do
    objects = for i <- 1..6000, do: {i, rem(i, 7)}
    ms = [{{:"$1", :"$2"}, [{:<, :"$2", 5}], [:"$1"]}]

    for type <- [:set, :ordered_set, :bag, :duplicate_bag],
        {f, args} <-
          [select: [ms, 5], select: [ms, 2500], select_reverse: [ms, 3]] ++
            [match: [{:"$1", 1}, 4], match_object: [{:_, 2}, 2100]] do
      e = :ets.new(:reuse, [type, :public])
      t = Table.new(:reuse, [type, :public])
      :ets.insert(e, objects)
      Table.insert(t, objects)
      {_, ce} = apply(:ets, f, [e | args])
      {_, ct} = apply(Table, f, [t | args])

      # One use of a continuation: {batch, next continuation} or :end.
      use = fn mod, cont ->
        case apply(mod, f, [cont]) do
          :"$end_of_table" -> {:end, :"$end_of_table"}
          {r, next} -> {r, next}
        end
      end

      {e1, ce2} = use.(:ets, ce)
      {e2, _} = use.(:ets, ce)
      {t1, ct2} = use.(Table, ct)
      {t2, _} = use.(Table, ct)
      # Also through term_to_binary (the table is alive: nothing to repair).
      {t3, _} = use.(Table, :erlang.binary_to_term(:erlang.term_to_binary(ct)))
      assert e1 == e2
      assert t1 == t2 and t1 == t3, "#{type} #{f} #{inspect(args)}"
      same_batch(type, t1, e1)

      # The continuation returned by the first use goes on from there.
      if ce2 != :"$end_of_table" do
        same_batch(type, elem(use.(Table, ct2), 0), elem(use.(:ets, ce2), 0))
      end
    end
  end

  test "a repeated select/3 reuses its plan only for the same table and the same spec, as in ETS" do
    objs = [{1, 0.0}, {2, -0.0}, {3, 1}, {4, 1.0}, {5, 0.0}]
    zero = [{{:"$1", 0.0}, [], [:"$1"]}]
    neg_zero = [{{:"$1", -0.0}, [], [:"$1"]}]
    one = [{{:"$1", 1}, [], [:"$1"]}]
    bound = [{{2, :"$1"}, [], [:"$1"]}]

    pairs =
      for type <- [:ordered_set, :set, :duplicate_bag] do
        e = :ets.new(:plan_reuse, [type, :public])
        t = Table.new(:plan_reuse, [type, :public])
        :ets.insert(e, objs)
        Table.insert(t, objs)
        {type, e, t}
      end

    # Specs equal under `==` (and, on OTP 25, `=:=`: 0.0 and -0.0), bound
    # keys, other tables between two uses: every call as ETS answers it.
    for _round <- 1..2,
        {type, e, t} <- pairs,
        spec <- [zero, zero, neg_zero, zero, one, bound, bound, one],
        {f, limit} <- [select: 1, select: 10, select_reverse: 2] do
      expected = drain(:ets, apply(:ets, f, [e, spec, limit]), %{type: type})

      assert drain(Table, apply(Table, f, [t, spec, limit]), %{type: type}) == expected,
             "#{type} #{f} #{inspect(spec)} limit #{limit}"
    end

    # A deleted table raises on each call (nothing kept answers for it).
    for {_type, e, t} <- pairs do
      assert {_, _} = Table.select(t, one, 1)
      :ets.delete(e)
      Table.delete(t)
      assert_raise ArgumentError, fn -> Table.select(t, one, 1) end
      assert_raise ArgumentError, fn -> Table.select(t, one, 1) end
      assert_raise ArgumentError, fn -> Table.select_reverse(t, bound, 1) end
    end

    # Access is checked on each call, also for specs that need no walk.
    owner = self()
    t = Table.new(:plan_private, [:ordered_set, :private])
    Table.insert(t, objs)
    assert {[1], _} = Table.select(t, zero, 1)

    task =
      Task.async(fn ->
        for spec <- [zero, zero, [], [], bound, bound] do
          assert_raise ArgumentError, fn -> Table.select(t, spec, 1) end
        end

        send(owner, :checked)
      end)

    Task.await(task)
    assert_received :checked
  end

  test "select/2 with a bound key: the spec kept for the next key is the table's own, as ETS answers" do
    objs = [{1, 0.0, :a}, {2, -0.0, :b}, {3, 1, :c}, {4, 1.0, :d}, {:k, 2, 5}]

    tables =
      for type <- [:set, :bag, :duplicate_bag], keypos <- [1, 2, 3] do
        e = :ets.new(:bound_reuse, [type, :public, keypos: keypos])
        t = Table.new(:bound_reuse, [type, :public, keypos: keypos])
        :ets.insert(e, objs)
        Table.insert(t, objs)
        {type, e, t}
      end

    specs =
      for key <- [1, 2, 3, 4, :k, 5, 0.0, -0.0, :a],
          rest <- [{0.0, :"$1"}, {-0.0, :"$1"}, {:_, :"$1"}, {:"$1", :_}] do
        [{:erlang.insert_element(1, rest, key), [], [{{:"$1", :"$_"}}]}]
      end

    # The same specs, shifted so that each key position of each table gets
    # a bound key, in rounds that alternate the tables.
    for _round <- 1..2, spec <- specs, {type, e, t} <- tables do
      assert Enum.sort(Table.select(t, spec)) == Enum.sort(:ets.select(e, spec)),
             "#{type} keypos #{:ets.info(e, :keypos)} #{inspect(spec)}"

      [{head, g, b}] = spec
      shifted = [{List.to_tuple(Enum.reverse(Tuple.to_list(head))), g, b}]

      assert Enum.sort(Table.select(t, shifted)) == Enum.sort(:ets.select(e, shifted)),
             "#{type} keypos #{:ets.info(e, :keypos)} #{inspect(shifted)}"

      assert Table.select_count(t, shifted) == :ets.select_count(e, shifted)
    end
  end

  test "bound keys of a hash table: results and pages in ETS's order, exactly" do
    # ETS gives the objects of the keys in reverse order of their first
    # clause (each key's objects in insertion order) and pages them from
    # the end, keeping the rest of a continuation reversed. Except that it
    # takes two keys whose objects share one of its hash buckets together,
    # in the bucket's order (erl_db_hash.c, `analyze_pattern`): with
    # several keys present, a hash table's results are compared as sets and
    # its pages by size and end marker.
    :rand.seed(:exsss, {7, 11, 13})

    for type <- [:set, :bag, :duplicate_bag, :ordered_set], round <- 1..60 do
      e = :ets.new(:bound_pages, [type, :public])
      t = Table.new(:bound_pages, [type, :public])
      keys = [1, 2, 1.0, :a, {:t, 1}, "k"]

      for _ <- 1..:rand.uniform(40) do
        obj = {Enum.random(keys), :rand.uniform(6)}
        :ets.insert(e, obj)
        Table.insert(t, obj)
      end

      clauses =
        for _ <- 1..:rand.uniform(5) do
          k = Enum.random(keys ++ [:absent])
          body = Enum.random([[:"$_"], [{{:"$1"}}], [round]])
          {{k, :"$1"}, Enum.random([[], [{:>, :"$1", 2}]]), body}
        end

      present = for({{k, _}, _, _} <- clauses, :ets.member(e, k), do: k) |> Enum.uniq()
      exact? = type == :ordered_set or length(present) <= 1
      norm = fn results -> if exact?, do: results, else: Enum.sort(results) end

      paged = fn pages ->
        if exact?,
          do: pages,
          else:
            {Enum.map(pages, fn {p, m} -> {length(p), m} end),
             pages |> Enum.flat_map(&elem(&1, 0)) |> Enum.sort()}
      end

      pattern = {Enum.random(keys), :_}
      limit = :rand.uniform(7)
      pages = fn first, next -> drain_pages(first, next) end
      label = "#{type}, #{inspect(clauses)}, limit #{limit}, objects #{inspect(:ets.tab2list(e))}"

      {ours, theirs} = {Table.select(t, clauses), :ets.select(e, clauses)}
      assert norm.(ours) == norm.(theirs), "#{label}: #{inspect(ours)} vs ETS #{inspect(theirs)}"
      {ours, theirs} = {Table.select_reverse(t, clauses), :ets.select_reverse(e, clauses)}
      assert norm.(ours) == norm.(theirs), "#{label}: #{inspect(ours)} vs ETS #{inspect(theirs)}"
      assert Table.match_object(t, pattern) == :ets.match_object(e, pattern), label

      assert paged.(pages.(Table.select(t, clauses, limit), &Table.select/1)) ==
               paged.(pages.(:ets.select(e, clauses, limit), &:ets.select/1)),
             label

      assert paged.(pages.(Table.select_reverse(t, clauses, limit), &Table.select_reverse/1)) ==
               paged.(pages.(:ets.select_reverse(e, clauses, limit), &:ets.select_reverse/1)),
             label

      assert pages.(Table.match(t, pattern, limit), &Table.match/1) ==
               pages.(:ets.match(e, pattern, limit), &:ets.match/1),
             label

      assert pages.(Table.match_object(t, pattern, limit), &Table.match_object/1) ==
               pages.(:ets.match_object(e, pattern, limit), &:ets.match_object/1),
             label

      :ets.delete(e)
      Table.delete(t)
    end
  end

  test "several bound keys of a set: the same objects as ETS, which groups keys sharing a bucket" do
    # 200 integer keys in ETS's 256 buckets: some pairs share one.
    :rand.seed(:exsss, {1, 2, 3})
    e = :ets.new(:bucket_keys, [:set, :public])
    t = Table.new(:bucket_keys, [:set, :public])
    for k <- 1..200, do: :ets.insert(e, {k, k}) && Table.insert(t, {k, k})

    orders =
      for _ <- 1..2_000 do
        ks = for _ <- 1..:rand.uniform(4), do: :rand.uniform(220)
        spec = for k <- ks, do: {{k, :"$1"}, [], [:"$1"]}
        {ours, theirs} = {Table.select(t, spec), :ets.select(e, spec)}
        assert Enum.sort(ours) == Enum.sort(theirs), inspect(ks)
        ours == theirs
      end

    # Mostly the same order too (all but a few percent of the specs).
    assert Enum.count(orders, & &1) > 1_800
  end

  # Every page of a limited select, and whether each came with a
  # continuation or :"$end_of_table".
  defp drain_pages(:"$end_of_table", _next), do: []

  defp drain_pages({page, :"$end_of_table"}, _next), do: [{page, :end}]

  defp drain_pages({page, cont}, next), do: [{page, :more} | drain_pages(next.(cont), next)]

  test "the scan NIFs raise ArgumentError for a malformed filter" do
    # (Filters are built by NativeStore.Table.Match; the NIFs are public.)
    for type <- [:set, :ordered_set, :bag] do
      t = Table.new(:bad_filter, [type, :public])
      Table.insert(t, {1, 2})

      for filter <- [
            [{2, [{0, 1} | :x], []}],
            [{2, [], [{0, :<, 1} | :x]}],
            [{2, [], [{0, :"/=", 1}]}],
            [{2, [{-1, 1}], []}],
            [{2, [], []} | :x],
            [{}],
            [],
            "filter"
          ] do
        assert_raise ArgumentError, fn -> NativeStore.Nif.table_scan(t, false, filter) end
      end

      # A binary literal that may be stored out of line is no condition.
      big = :binary.copy("b", 100)
      Table.insert(t, {3, big})
      assert {:done, objs} = NativeStore.Nif.table_scan(t, false, [{2, [{1, big}], []}])
      assert Enum.sort(objs) == [{1, 2}, {3, big}]
      Table.delete(t, 3)
      # A valid filter; an atom is no filter.
      assert {:done, [{1, 2}]} = NativeStore.Nif.table_scan(t, false, [{2, [{0, 1}], []}])
      assert {:done, []} = NativeStore.Nif.table_scan(t, false, [{2, [], [{1, :>, 2}]}])
      assert {:done, [{1, 2}]} = NativeStore.Nif.table_scan(t, false, nil)
      Table.delete(t)
    end
  end

  test "a select/3 with a small limit is charged for the objects it copies, not a full chunk" do
    t = Table.new(:limit_reductions, [:ordered_set, :public])
    Table.insert(t, for(i <- 1..50_000, do: {i, i}))
    ms = [{{:"$1", :_}, [], [:"$1"]}]
    # Plan and compiled spec cached.
    {_, cont} = Table.select_reverse(t, ms, 10)

    reductions = fn f ->
      {:reductions, r0} = Process.info(self(), :reductions)
      f.()
      {:reductions, r1} = Process.info(self(), :reductions)
      r1 - r0
    end

    assert reductions.(fn -> {[50_000 | _], _} = Table.select_reverse(t, ms, 10) end) < 500
    assert reductions.(fn -> {[49_990 | _], _} = Table.select_reverse(cont) end) < 500
    # A full scan still charges its chunks (about 1000 reductions each).
    assert reductions.(fn -> 50_000 = length(Table.select(t, ms)) end) > 20_000
  end

  # Same batch as ETS where the order is defined, same size elsewhere.
  defp same_batch(:ordered_set, native, ets), do: assert(native == ets)
  defp same_batch(_type, native, ets) when is_atom(ets), do: assert(native == ets)
  defp same_batch(_type, native, ets), do: assert(length(native) == length(ets))

  test "select_delete on bags removes what the spec matched: 0.0 is not -0.0 there" do
    # OTP 25 holds {0.0, x} and {-0.0, x} identical (=:=), but a 0.0 in a
    # match specification matches only the first (found by this file's
    # differential with SEEDS=2000, seed 1387).
    for type <- [:bag, :duplicate_bag] do
      objs = [{0.0, "x"}, {-0.0, "x"}, {0.0, "x"}, {1, "x"}, {-0.0, "y"}]

      for spec <- [
            [{{0.0, :_}, [], [true]}],
            [{{-0.0, :_}, [], [true]}],
            [{{:_, "x"}, [], [true]}],
            [{{:"$1", :_}, [{:==, :"$1", 0.0}], [true]}]
          ] do
        e = :ets.new(:zero, [type, :public])
        t = Table.new(:zero, [type, :public])
        :ets.insert(e, objs)
        Table.insert(t, objs)
        assert Table.select_delete(t, spec) == :ets.select_delete(e, spec), inspect({type, spec})

        assert canonical_sort(Table.tab2list(t)) == canonical_sort(:ets.tab2list(e)),
               inspect({type, spec})
      end
    end
  end

  # No match-spec variable (`:"$1"`, `:_`...) anywhere in `t`.
  defp ground?(t) when is_atom(t), do: not String.starts_with?(Atom.to_string(t), "$") and t != :_
  defp ground?(t) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.all?(&ground?/1)
  defp ground?(t) when is_list(t), do: Enum.all?(t, &ground?/1)
  defp ground?(%{} = m), do: Enum.all?(m, fn {k, v} -> ground?(k) and ground?(v) end)
  defp ground?(_), do: true

  test "a variable-free map in the key position is a key to look up, as in ETS (all types)" do
    # ETS looks such a key up instead of matching every map with the
    # pattern's pairs; with variables inside, the map is a pattern (found
    # by this file's differential with SEEDS=6000, seed 2833).
    objs =
      [{%{}, 0}, {%{k: 3}, 1}, {%{k: 3, j: 1}, 2}, {{%{a: 1}, 1}, 3}, {{%{}, 1}, 4}] ++
        [{{%{a: 1, b: 2}, 1}, 5}, {[%{}], 6}, {[%{a: 1}], 7}, {%{k: 4}, 8}]

    keys = [
      %{},
      %{k: 3},
      {%{}, 1},
      {%{a: 1}, 1},
      [%{}],
      %{k: :"$2"},
      {%{a: :"$2"}, 1},
      [%{a: :_}]
    ]

    for type <- [:ordered_set, :set], k <- keys do
      e = :ets.new(:mapkey, [type, :public])
      t = Table.new(:mapkey, [type, :public])
      :ets.insert(e, objs)
      Table.insert(t, objs)
      ms = [{{k, :"$1"}, [], [:"$1"]}]
      count = [{{k, :_}, [], [true]}]
      replace = [{{k, :"$1"}, [], [{{{:element, 1, :"$_"}, :"$1", :new}}]}]

      if type == :set and ground?(k) do
        # A looked-up key of a hash table: ETS also returns objects whose
        # (different) map keys share its hash slot and match the key as a
        # pattern (`%{}` matches every map), which depends on its hash
        # layout and varied between runs (see the README); NativeStore
        # returns the key's object, which ETS returns too.
        ours = Table.select(t, ms)
        assert ours == for({key, v} <- objs, key === k, do: v), inspect({type, k})
        assert ours -- :ets.select(e, ms) == [], inspect({type, k})
        assert Table.select_count(t, count) == length(ours)
        assert Table.select_replace(t, replace) == length(ours)
      else
        sorted = fn l -> if type == :ordered_set, do: l, else: Enum.sort(l) end
        assert sorted.(Table.select(t, ms)) == sorted.(:ets.select(e, ms)), inspect({type, k})
        assert Table.select_count(t, count) == :ets.select_count(e, count)

        assert Table.select_replace(t, replace) == :ets.select_replace(e, replace),
               inspect({type, k})
      end
    end
  end

  test "an ordered_set walks the range between several bound keys, maps matching as patterns, as ETS" do
    # One bound key is looked up; several make ETS walk from the smallest to
    # the greatest, where a map in a key matches every map with its pairs
    # (found by this file's differential with SEEDS=20000, seed 11533).
    objs = [{%{k: :a}}, {%{}}, {[2.5], 7}, {1, 3}, {%{k: :b}, 1}, {%{}, 2}, {[1], 0}, {:a, 1}]
    e = :ets.new(:ranges, [:ordered_set, :public])
    t = Table.new(:ranges, [:ordered_set, :public])
    :ets.insert(e, objs)
    Table.insert(t, objs)

    heads = [
      [{%{}}],
      [{1, :_}, {%{}}],
      [{[2.5], :_}, {%{}}],
      [{[2.5], :_}, {%{}, :_}],
      [{2.5, :_}, {%{}, :_}],
      [{:a, :_}, {%{}, :_}],
      [{[1], :_}, {%{}, :_}],
      [{%{}, :_}, {%{}, :_}],
      [{%{}}, {[2.5], :"$2"}]
    ]

    for hs <- heads do
      ms = for h <- hs, do: {h, [], [:"$_"]}
      counting = for h <- hs, do: {h, [], [true]}
      assert Table.select(t, ms) == :ets.select(e, ms), inspect(hs)
      assert Table.select_reverse(t, ms) == :ets.select_reverse(e, ms), inspect(hs)
      assert Table.select_count(t, counting) == :ets.select_count(e, counting), inspect(hs)
      assert Table.select_replace(t, ms) == :ets.select_replace(e, ms), inspect(hs)
    end
  end

  test "a forged select continuation raises ArgumentError instead of looping" do
    # Found by review: a source, limit or buffer no call makes sent the
    # continuation's page filling round forever.
    t = Table.new(:forged_cont, [:ordered_set, :public])
    Table.insert(t, for(i <- 1..5000, do: {i, i}))
    ms = [{{:"$1", :"$2"}, [{:>, :"$2", 0}], [:"$1"]}]
    {_, {tag, tab, cms, limit, buffer, source}} = Table.select(t, ms, 100)

    forged = [
      {tag, tab, cms, limit, buffer, :junk},
      {tag, tab, cms, limit, buffer, {:junk, 1, 2}},
      {tag, tab, cms, limit, buffer, Tuple.append(source, 1)},
      {tag, tab, cms, -1, buffer, source},
      {tag, tab, cms, 0, buffer, source},
      {tag, tab, cms, limit, :not_a_list, source},
      {tag, tab, cms, limit, [1 | 2], source}
    ]

    parent = self()

    for c <- forged do
      pid =
        spawn(fn ->
          result =
            try do
              {:returned, Table.select(c)}
            rescue
              e -> {:raised, e.__struct__}
            end

          send(parent, {:result, result})
        end)

      receive do
        {:result, result} -> assert result == {:raised, ArgumentError}, inspect(c)
      after
        5_000 ->
          Process.exit(pid, :kill)
          flunk("#{inspect(c)}: no answer in 5 s")
      end
    end
  end

  test "a forged scan position raises ArgumentError" do
    t = Table.new(:forged, [:public])
    o = Table.new(:forged_o, [:ordered_set, :public])
    Table.insert(t, for(i <- 1..5000, do: {i}))
    Table.insert(o, for(i <- 1..5000, do: {i}))
    {:more, _, {tid, _, _, _}} = NativeStore.Nif.table_walk(t, false, 10)
    {:more, _, {oid, _, _, _}} = NativeStore.Nif.table_walk(o, false, 10)

    for pos <-
          [{tid, 64, 0, 10}, {tid, -1, 0, 10}, {tid, 0, :x, 10}, {tid, 0, 0}, :pos] ++
            [{:forged, 0, 0, 10}, {oid, 0, 0, 10} |> put_elem(2, 7), {make_ref(), 0, 0, 1}] do
      assert_raise ArgumentError, fn -> NativeStore.Nif.cursor_next(pos, []) end
    end

    # A bucket past the shard's end just moves on; any key of an
    # ordered_set is a place to continue after.
    assert {:more, _, _} = NativeStore.Nif.cursor_next({tid, 0, 1_099_511_627_776, 10}, [])
    assert {:more, [{3}, {4} | _], _} = NativeStore.Nif.cursor_next({oid, 2.5, false, 10}, [])
    assert {:more, [{2}, {1}], _} = NativeStore.Nif.cursor_next({oid, 3, true, 2}, [])
  end

  test "access: writes from a non-owner raise on protected tables, reads on private ones" do
    t = Table.new(:prot, [:protected])
    p = Table.new(:priv, [:private])
    Table.insert(t, {1, 2})
    Table.insert(p, {1, 2})
    ms = [{{:"$1", :_}, [], [true]}]
    nothing = [{{:nope, :_}, [], [true]}]

    results =
      Task.async(fn ->
        for f <- [
              fn -> Table.select(t, ms) end,
              fn -> Table.select_delete(t, nothing) end,
              fn -> Table.select_replace(t, [{{:"$1", :_}, [], [{{:"$1", 0}}]}]) end,
              fn -> Table.match_delete(t, {:nope, :_}) end,
              fn -> Table.select(p, ms) end,
              fn -> Table.select(p, [{{1, :_}, [], [true]}]) end,
              fn -> Table.select(p, []) end,
              fn -> Table.foldl(fn _, a -> a end, 0, p) end
            ],
            do: outcome(f) |> shape()
      end)
      |> Task.await()

    assert results == [
             {:ok, [true]},
             {:raise, ArgumentError},
             {:raise, ArgumentError},
             {:raise, ArgumentError},
             {:raise, ArgumentError},
             {:raise, ArgumentError},
             {:raise, ArgumentError},
             {:raise, ArgumentError}
           ]
  end

  test "select_replace is atomic per object: a concurrently changed object is left alone" do
    t = Table.new(:replace_race, [:public])
    Table.insert(t, for(i <- 1..20_000, do: {i, 0}))
    parent = self()

    writer =
      spawn_link(fn ->
        for i <- 20_000..1//-1, do: Table.insert(t, {i, :writer})
        send(parent, :written)
      end)

    n = Table.select_replace(t, [{{:"$1", 0}, [], [{{:"$1", :replaced}}]}])
    assert_receive :written, 10_000
    refute Process.alive?(writer)
    assert n <= 20_000
    # The writer writes every key once. A replacement either happened before
    # the writer's write (and was overwritten) or found the object changed
    # and was skipped: every object ends as the writer's.
    assert Enum.all?(Table.tab2list(t), &match?({_, :writer}, &1))
  end

  test "select_reverse and foldr walk an ordered_set down from its last key, chunk by chunk" do
    t = Table.new(:rev, [:ordered_set, :public])
    e = :ets.new(:rev, [:ordered_set, :public])
    # Several traversal chunks, integer and other keys mixed (1.5, tuples).
    objs =
      for(i <- 1..9_000, do: {i, rem(i, 7)}) ++
        for(i <- 1..500, do: {{:t, i}, rem(i, 7)}) ++ [{1.5, 3}, {:atom, 3}]

    Table.insert(t, objs)
    :ets.insert(e, objs)
    ms = [{{:"$1", :"$2"}, [{:<, :"$2", 3}], [:"$1"]}]

    assert Table.select_reverse(t, ms) == :ets.select_reverse(e, ms)
    assert Table.foldr(&[&1 | &2], [], t) == :ets.foldr(&[&1 | &2], [], e)

    for limit <- [1, 10, 2_500] do
      assert drain(Table, Table.select_reverse(t, ms, limit), %{type: :ordered_set}) ==
               drain(:ets, :ets.select_reverse(e, ms, limit), %{type: :ordered_set})
    end

    # Ten results from the top (or the bottom): one chunk of ten objects is
    # fetched, not a walk of the table.
    top = [{{:"$1", :_}, [], [:"$1"]}]

    for {select, expected} <- [
          {&Table.select_reverse/3, [{:t, 500}, {:t, 499}]},
          {&Table.select/3, [1, 1.5]}
        ] do
      before = Match.chunks_fetched()
      assert {[a, b | _] = ten, _cont} = select.(t, top, 10)
      assert [a, b] == expected and length(ten) == 10
      assert Match.chunks_fetched() == before + 1
    end

    # A selective spec keeps doubling its chunks: the 10 greatest integers
    # sit under 502 other keys.
    before = Match.chunks_fetched()
    ints = [{{:"$1", :_}, [{:is_integer, :"$1"}], [:"$1"]}]
    assert {[9_000, 8_999 | _], _} = Table.select_reverse(t, ints, 10)
    assert (Match.chunks_fetched() - before) in 2..7
  end

  test "walks over big objects copy a few MB per chunk, not 2000 objects" do
    big = :binary.copy(<<7>>, 100_000)

    for type <- [:set, :ordered_set, :bag, :duplicate_bag] do
      t = Table.new(:big_walk, [type, :public])
      e = :ets.new(:big_walk, [type, :public])
      objs = for i <- 1..300, do: {i, i, big}
      Table.insert(t, objs)
      :ets.insert(e, objs)
      spec = [{{:"$1", :"$2", :_}, [{:>, :"$2", 0}], [:"$1"]}]

      before = Match.chunks_fetched()
      assert Enum.sort(Table.select(t, spec)) == Enum.sort(:ets.select(e, spec))
      # 30 MB of objects: several chunks of about 4 MB each.
      assert Match.chunks_fetched() - before >= 5
      assert length(Table.tab2list(t)) == 300
      assert Table.foldl(fn _, n -> n + 1 end, 0, t) == 300

      assert Table.foldr(fn {k, _, _}, acc -> [k | acc] end, [], t) |> Enum.sort() ==
               Enum.to_list(1..300)

      Table.delete(t)
      :ets.delete(e)
    end
  end

  test "a select with bound keys on a 200k-entry table looks keys up, never scans" do
    t = Table.new(:bound, [:public])
    e = :ets.new(:bound, [:public])
    objs = for i <- 1..200_000, do: {i, rem(i, 10), "v#{i}"}
    Table.insert(t, objs)
    :ets.insert(e, objs)

    specs = [
      [{{123, :"$1", :_}, [], [:"$1"]}],
      [{{123, :_, :_}, [], [:"$_"]}, {{456, :"$1", :_}, [{:>, :"$1", 3}], [:"$1"]}],
      [{{{:no, :such}, :_, :_}, [], [:"$_"]}],
      [{{7.0, :_, :_}, [], [:"$_"]}, {{7, :_, :_}, [], [:"$_"]}]
    ]

    before = Match.chunks_fetched()

    for ms <- specs do
      assert canonical_sort(Table.select(t, ms)) == canonical_sort(:ets.select(e, ms))
      assert Table.select_count(t, ms) == :ets.select_count(e, ms)
      assert Table.select_reverse(t, ms) |> canonical_sort() == canonical_sort(:ets.select(e, ms))
      assert {_, _} = Table.select(t, ms ++ [{{1, :_, :_}, [], [1]}], 1)
    end

    assert Table.match_object(t, {99, :_, :_}) == [{99, 9, "v99"}]
    assert Table.match(t, {99, :"$1", :"$2"}) == [[9, "v99"]]
    assert Table.select_replace(t, [{{5, :"$1", :"$2"}, [], [{{5, :"$1", :new}}]}]) == 1
    assert Table.select_delete(t, [{{6, :_, :_}, [], [true]}]) == 1
    assert Table.match_delete(t, {8, :_, :_})
    assert Table.lookup(t, 5) == [{5, 5, :new}]
    assert Table.lookup(t, 6) == []
    assert Table.lookup(t, 8) == []
    assert Match.chunks_fetched() == before

    # A spec with one unbound clause scans (and so counts chunks).
    Table.select(t, [{{123, :_, :_}, [], [1]}, {{:_, 3, :_}, [], [2]}])
    assert Match.chunks_fetched() > before + 50

    {bound_us, _} =
      :timer.tc(fn -> for _ <- 1..100, do: Table.select(t, [{{123, :"$1", :_}, [], [:"$1"]}]) end)

    {scan_us, _} = :timer.tc(fn -> Table.tab2list(t) end)
    # 100 bound selects cost far less than one full copy of the table.
    assert bound_us < scan_us
  end

  # Continuations differ in representation: keep only their presence.
  defp shape({:ok, {results, :"$end_of_table"}}), do: {:ok, {Enum.sort(results), :end}}

  defp shape({:ok, {results, _cont}}) when is_list(results),
    do: {:ok, {Enum.sort(results), :cont}}

  defp shape(other), do: other
end

defmodule NativeStore.TableSelectScheduleTest do
  @moduledoc """
  Scans of a 1,000,000-entry table never hold a scheduler long: run under
  `:erlang.system_monitor/2` with `long_schedule` (not async, since the
  system monitor is node-wide).
  """
  use ExUnit.Case, async: false

  alias NativeStore.Table

  @n 1_000_000
  # Generous for a shared 2-core machine (as table_scheduler_test.exs): a
  # time slice may cover several 2,000-object chunks of well under 1 ms.
  @threshold_ms 10

  @tag timeout: 120_000
  test "select, select_count, select_delete and foldl over 1M entries: no long_schedule" do
    t = Table.new(:sched, [:public])
    e = :ets.new(:sched, [:public])

    for base <- 0..(@n - 1)//10_000 do
      batch = for i <- base..(base + 9_999), do: {i, rem(i, 100), i * 2}
      Table.insert(t, batch)
      :ets.insert(e, batch)
    end

    assert Table.info(t, :size) == @n

    # Other OS processes (a 2-core machine, compilers running) can deschedule
    # a scheduler thread and so fake a long schedule: a clean run out of
    # five passes; a NIF or BIF that really holds the scheduler fails all.
    attempts =
      Enum.reduce_while(1..5, [], fn _, acc ->
        {result, longs, micros} = monitored(fn -> work(Table, t) end)
        restore(t)
        assert result == {10_000, 500_000, 49_500_000, 10_000, 10_000}
        acc = [{micros, longs} | acc]
        if longs == [], do: {:halt, acc}, else: {:cont, acc}
      end)

    {ets_result, ets_longs, ets_micros} = monitored(fn -> work(:ets, e) end)
    assert ets_result == {10_000, 500_000, 49_500_000, 10_000, 10_000}

    IO.puts(
      "\n[long_schedule] scans of #{@n} entries, NativeStore: " <>
        Enum.map_join(Enum.reverse(attempts), "; ", fn {us, longs} ->
          "#{div(us, 1000)} ms, #{length(longs)} long schedules #{inspect(longs)}"
        end) <>
        " | :ets: #{div(ets_micros, 1000)} ms, #{length(ets_longs)} long schedules"
    )

    assert {_, []} = hd(attempts)
    Table.delete(t)
    :ets.delete(e)
  end

  defp work(m, t) do
    a = m.select(t, [{{:"$1", :"$2", :_}, [{:==, :"$2", 7}], [:"$1"]}])
    b = m.select_count(t, [{{:_, :"$1", :_}, [{:<, :"$1", 50}], [true]}])
    c = m.foldl(fn {_, v, _}, acc -> acc + v end, 0, t)
    {r, cont} = m.select(t, [{{:"$1", 3, :_}, [], [:"$1"]}], 5000)
    d = drain_count(m, cont, length(r))
    e = m.select_delete(t, [{{:_, :"$1", :_}, [{:>=, :"$1", 99}], [true]}])
    {length(a), b, c, d, e}
  end

  defp restore(t) do
    for base <- 0..(@n - 1)//100_000 do
      Table.insert(t, for(i <- (base + 99)..(base + 99_999)//100, do: {i, 99, i * 2}))
    end
  end

  defp drain_count(_m, :"$end_of_table", n), do: n

  defp drain_count(m, cont, n) do
    case m.select(cont) do
      :"$end_of_table" -> n
      {r, cont} -> drain_count(m, cont, n + length(r))
    end
  end

  # Runs `work` in a fresh process under the system monitor and returns its
  # result with the long_schedule reports that point at that process.
  defp monitored(work) do
    parent = self()
    :erlang.system_monitor(self(), [{:long_schedule, @threshold_ms}])

    try do
      {pid, ref} =
        spawn_monitor(fn ->
          receive do
            :go -> :ok
          end

          {us, result} = :timer.tc(work)
          send(parent, {:done, self(), result, us})
        end)

      send(pid, :go)

      {result, us} =
        receive do
          {:done, ^pid, result, us} -> {result, us}
          {:DOWN, ^ref, _, _, reason} -> flunk("worker died: #{inspect(reason)}")
        after
          110_000 -> flunk("worker timed out")
        end

      # Reports are sent when the process is scheduled out: collect them.
      Process.sleep(50)
      {result, longs(pid, []), us}
    after
      :erlang.system_monitor(:undefined)
    end
  end

  defp longs(pid, acc) do
    receive do
      {:monitor, ^pid, :long_schedule, info} -> longs(pid, [info | acc])
      {:monitor, _other, :long_schedule, _info} -> longs(pid, acc)
    after
      0 -> Enum.reverse(acc)
    end
  end
end
