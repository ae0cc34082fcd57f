defmodule NativeStore.TableTypesDifferentialTest do
  @moduledoc """
  Differential property test for the `:ordered_set`, `:bag` and
  `:duplicate_bag` table types: the same random operations run on an `:ets`
  table (the oracle) and on a `NativeStore.Table` of the same type and
  options; every result, and every raised exception module, must agree.

  Comparisons: exact for point operations (a bag's `lookup/2` keeps
  insertion order, so it is compared exactly too); `tab2list/1` and the
  `first/next` and `last/prev` walks exactly for `:ordered_set` (term order)
  and as sorted lists for bags (their order is unspecified).

  Replay one failing case with

      SEED=1234 TYPE=bag mix test test/native_store/table_types_differential_test.exs

  Knobs: `SEED`, `SEEDS` (default 120), `OPS` (per seed and type, default
  300), `TYPE` (one of the three types).
  """
  use ExUnit.Case, async: true

  import Bitwise
  import NativeStore.Test.Differential
  alias NativeStore.Table

  @moduletag timeout: 300_000

  defp seeds, do: seeds(120)

  defp types do
    case System.get_env("TYPE") do
      t when t in [nil, ""] -> [:ordered_set, :bag, :duplicate_bag]
      t -> [String.to_existing_atom(t)]
    end
  end

  test "random operation sequences agree with :ets for ordered_set, bag and duplicate_bag" do
    n = ops_per_seed(300)

    {micros, total} =
      :timer.tc(fn ->
        for type <- types(), seed <- seeds(), reduce: 0 do
          acc -> acc + run_seed(type, seed, n)
        end
      end)

    IO.puts(
      "\n[types differential] #{total} random operations over #{length(seeds())} seeds " <>
        "x #{inspect(types())} in #{div(micros, 1000)} ms"
    )

    if not single_seed?() and System.get_env("TYPE") in [nil, ""],
      do: assert(total >= 100_000)
  end

  defp run_seed(type, seed, n) do
    :rand.seed(:exsss, {seed, seed * 7 + 1, :erlang.phash2(type)})
    keypos = Enum.at([1, 1, 2], rem(seed, 3))
    access = if rem(seed, 4) == 0, do: :protected, else: :public
    # Half the ordered_sets get write_concurrency: their key ranges are
    # split into parts (by `{:split}` operations) under every operation.
    parted = type == :ordered_set and rem(seed, 2) == 1

    opts =
      [type, access, {:keypos, keypos}] ++ if parted, do: [{:write_concurrency, true}], else: []

    ets = :ets.new(:types_oracle, opts)
    nst = Table.new(:types_native, opts)
    pool = key_pool()
    # A few groups of keys kept in external term format, each group terms
    # that are one key made differently (small pools: they collide often).
    groups = ext_key_groups()
    ext = for _ <- 1..6, do: pick(groups)

    ctx = %{
      seed: seed,
      type: type,
      keypos: keypos,
      pool: pool,
      ext: ext,
      opts: opts,
      ets: ets,
      parted: parted
    }

    try do
      Enum.each(1..n, fn i -> compare!(ctx, i, gen_op(ctx), ets, nst) end)
      compare!(ctx, n + 1, {:tab2list}, ets, nst)
      compare!(ctx, n + 2, {:walk}, ets, nst)
      compare!(ctx, n + 3, {:walk_back}, ets, nst)
      n + 3
    after
      :ets.delete(ets)
      Table.delete(nst)
    end
  end

  defp compare!(ctx, i, op, ets, nst) do
    expected = run(ctx, :ets, ets, op)
    actual = run(ctx, Table, nst, op)

    unless same?(expected, actual) or bag_order_only?(ctx, op, expected, actual) do
      flunk("""
      NativeStore.Table differs from :ets
        seed:     #{ctx.seed}   (replay: SEED=#{ctx.seed} TYPE=#{ctx.type} mix test #{__ENV__.file})
        options:  #{inspect(ctx.opts)}
        op ##{i}:  #{inspect(op, limit: :infinity, printable_limit: 200)}
        :ets:     #{inspect(expected, limit: :infinity, printable_limit: 200)}
        native:   #{inspect(actual, limit: :infinity, printable_limit: 200)}
      """)
    end
  end

  # Known limitation: when one list insert puts several objects with the
  # same key into a bag, ETS's order among them depends on how its hash
  # buckets group the list (it varies with refs and pids from run to run);
  # NativeStore keeps the list's order (reversed for :bag, as ETS usually
  # does). The objects themselves must still be the same.
  defp bag_order_only?(%{type: type}, op, {:ok, e}, {:ok, a})
       when type in [:bag, :duplicate_bag] and is_list(e) and is_list(a) and
              elem(op, 0) in [:lookup, :take, :lookup_element],
       do: canonical_sort(e) == canonical_sort(a)

  defp bag_order_only?(_, _, _, _), do: false

  defp run(ctx, mod, tab, op), do: outcome(fn -> apply_op(ctx, mod, tab, op) end)

  defp ordered?(ctx), do: ctx.type == :ordered_set

  defp apply_op(_, :ets, _, {:split}), do: :ok
  defp apply_op(_, Table, t, {:split}), do: NativeStore.Nif.table_split_parts(t) && :ok
  defp apply_op(_, m, t, {:insert, objs}), do: m.insert(t, objs)
  defp apply_op(_, m, t, {:insert_new, objs}), do: m.insert_new(t, objs)
  defp apply_op(_, m, t, {:lookup, k}), do: m.lookup(t, k)
  defp apply_op(_, m, t, {:lookup_element, k, pos}), do: m.lookup_element(t, k, pos)
  defp apply_op(_, m, t, {:member, k}), do: m.member(t, k)
  defp apply_op(_, m, t, {:take, k}), do: m.take(t, k)
  defp apply_op(_, m, t, {:delete, k}), do: m.delete(t, k)
  defp apply_op(_, m, t, {:delete_object, o}), do: m.delete_object(t, o)
  defp apply_op(_, m, t, {:delete_all_objects}), do: m.delete_all_objects(t)
  defp apply_op(_, m, t, {:update_counter, k, op}), do: m.update_counter(t, k, op)
  defp apply_op(_, m, t, {:update_counter, k, op, d}), do: m.update_counter(t, k, op, d)
  defp apply_op(_, m, t, {:update_element, k, spec}), do: m.update_element(t, k, spec)
  defp apply_op(_, m, t, {:info_size}), do: m.info(t, :size)
  defp apply_op(_, m, t, {:info_type}), do: m.info(t, :type)
  defp apply_op(_, m, t, {:info_stats}), do: stats_shape(m.info(t, :stats))

  # An ordered_set walk is compared key by key (the keys inserted on the
  # way included); a hash table's as the set of stored keys met, and how
  # many keys were met twice.
  defp apply_op(ctx, m, t, {:fixed_walk, plan}) do
    met = fixed_walk(m, t, plan)

    for objs <- elem(plan, 0),
        o <- objs,
        do: m.delete(t, o |> Tuple.to_list() |> Enum.find(&fresh_walk_key?/1))

    walk = if ordered?(ctx), do: met, else: fixed_walk_summary(met)
    {walk, m.info(t, :size)}
  end

  defp apply_op(ctx, m, t, {:tab2list}) do
    l = m.tab2list(t)
    if ordered?(ctx), do: l, else: canonical_sort(l)
  end

  defp apply_op(ctx, m, t, {:walk}) do
    l = walk(m.first(t), &m.next(t, &1))
    if ordered?(ctx), do: l, else: canonical_sort(l)
  end

  defp apply_op(ctx, m, t, {:walk_back}) do
    l = walk(m.last(t), &m.prev(t, &1))
    if ordered?(ctx), do: l, else: canonical_sort(l)
  end

  # Unordered tables: only whether next/prev raise (keys absent) or not.
  defp apply_op(ctx, m, t, {:next, k}) do
    r = m.next(t, k)
    if ordered?(ctx), do: r, else: :returned
  end

  defp apply_op(ctx, m, t, {:prev, k}) do
    r = m.prev(t, k)
    if ordered?(ctx), do: r, else: :returned
  end

  defp walk(:"$end_of_table", _step), do: []
  defp walk(k, step), do: [k | walk(step.(k), step)]

  # ------------------------------------------------------------------
  # Generators (pick/1, chance/1, int/2, weighted/1 and deep/2 come from
  # NativeStore.Test.Differential)

  defp key_pool do
    x = int(0, 5)

    fixed = [
      1,
      1.0,
      2,
      2.0,
      0,
      0.0,
      -0.0,
      -1,
      -1.5,
      1.5,
      3,
      1 <<< 64,
      -(1 <<< 64),
      1.0e19,
      1 <<< 70,
      :a,
      :b,
      :zz,
      nil,
      "",
      "a",
      "ab",
      "b",
      <<1::3>>,
      {},
      {1},
      {1.0},
      {1, :a},
      {:a, 1},
      [],
      [1],
      [1.0],
      [1, 2],
      [1 | 2],
      [1 | :a],
      %{},
      %{a: 1},
      %{a: 1.0},
      %{1 => :x},
      %{1.0 => :x},
      Map.new(1..40, &{&1 * (x + 1), &1}),
      self(),
      make_ref(),
      make_ref(),
      &Enum.map/2,
      fn -> x end,
      deep(70, :leaf),
      deep(70, 1)
    ]

    List.to_tuple(fixed ++ for(_ <- 1..10, do: rand_term(2)))
  end

  defp rand_term(depth) do
    kinds =
      if depth <= 0,
        do: [:int, :float, :atom, :bin, :zero],
        else: [:int, :float, :atom, :bin, :zero, :tuple, :list, :map, :bignum]

    case pick(kinds) do
      :int -> int(-5, 10)
      :float -> pick([1.0, 1.5, -2.5, 3.0])
      :zero -> pick([0, 0.0, -0.0])
      :atom -> pick([:a, :b, :c, nil, false])
      :bin -> :rand.bytes(int(0, 4))
      :bignum -> pick([1, -1]) * ((1 <<< int(64, 100)) + int(0, 9))
      :tuple -> List.to_tuple(for _ <- 1..int(0, 3), do: rand_term(depth - 1))
      :list -> for _ <- 1..int(0, 3), do: rand_term(depth - 1)
      :map -> Map.new(1..int(0, 3), fn _ -> {rand_term(depth - 1), rand_term(depth - 1)} end)
    end
  end

  defp gen_key(ctx) do
    cond do
      chance(0.08) -> pick(pick(ctx.ext))
      chance(0.9) -> elem(ctx.pool, :rand.uniform(tuple_size(ctx.pool)) - 1)
      true -> rand_term(2)
    end
  end

  # Few distinct values, so that bags see identical objects often.
  defp gen_value do
    weighted([
      {6, int(0, 3)},
      {2, pick([0.0, -0.0, 1.0])},
      {1, pick([:x, "v", {1}])},
      # Large binaries (inline in these table types; out of line in sets).
      {1, :binary.copy(pick(["ab", "c"]), pick([40, 70, 600]))}
    ])
  end

  defp gen_object(ctx, key), do: object(ctx.keypos, key, 2, &gen_value/0)

  defp gen_object_maybe_bad(ctx, key) do
    weighted([
      {30, fn -> gen_object(ctx, key) end},
      {1, fn -> pick([:not_a_tuple, [key], {}]) end}
    ]).()
  end

  defp gen_objects(ctx) do
    key = gen_key(ctx)
    # Several objects of one key, to exercise bag buckets.
    objs =
      for _ <- 1..int(0, 5) do
        gen_object_maybe_bad(ctx, if(chance(0.5), do: key, else: gen_key(ctx)))
      end

    # ETS leaves undefined which of several objects with equal keys one list
    # insert keeps in an ordered_set (and it varies between runs): keep one.
    if ctx.type == :ordered_set, do: distinct_keys(objs, ctx.keypos, &(&1 == &2)), else: objs
  end

  defp stored(ctx, key), do: :ets.lookup(ctx.ets, key)

  defp gen_op(ctx) do
    key = gen_key(ctx)

    weighted([
      {10, fn -> {:insert, gen_object_maybe_bad(ctx, key)} end},
      {4, fn -> {:insert, gen_objects(ctx)} end},
      {3, fn -> {:insert_new, gen_object_maybe_bad(ctx, key)} end},
      {2, fn -> {:insert_new, gen_objects(ctx)} end},
      {8, fn -> {:lookup, key} end},
      {4, fn -> {:lookup_element, key, pick([1, 2, 3, 0, ctx.keypos])} end},
      {4, fn -> {:member, key} end},
      {2, fn -> {:take, key} end},
      {2, fn -> {:delete, key} end},
      {5, fn -> {:delete_object, gen_delete_object(ctx, key)} end},
      {1, fn -> if chance(0.15), do: {:delete_all_objects}, else: {:info_size} end},
      {4, fn -> gen_update_counter(ctx, key) end},
      {3, fn -> gen_update_element(ctx, key) end},
      {1, fn -> {:tab2list} end},
      {1, fn -> pick([{:walk}, {:walk_back}, {:info_type}]) end},
      {3, fn -> {:next, key} end},
      {3, fn -> {:prev, key} end},
      {2, fn -> {:info_size} end},
      {1, fn -> {:info_stats} end},
      {1, fn -> {:fixed_walk, gen_walk_plan(ctx.ets, ctx.keypos, &gen_object(ctx, &1))} end},
      {if(ctx.parted, do: 3, else: 0), fn -> {:split} end}
    ]).()
  end

  defp gen_delete_object(ctx, key) do
    case stored(ctx, key) do
      [] ->
        gen_object_maybe_bad(ctx, key)

      objs ->
        obj = pick(objs)

        weighted([
          {4, obj},
          {2, mutate(obj, ctx.keypos)},
          {1, gen_object(ctx, key)}
        ])
    end
  end

  defp mutate(obj, keypos) do
    case for i <- 1..tuple_size(obj), i != keypos, do: i do
      [] ->
        obj

      positions ->
        p = pick(positions)

        v =
          case elem(obj, p - 1) do
            i when is_integer(i) -> pick([i * 1.0, i + 1])
            f when is_float(f) -> pick([-f, f + 1])
            _ -> :mutated
          end

        put_elem(obj, p - 1, v)
    end
  end

  defp gen_update_counter(ctx, key) do
    pos = pick([ctx.keypos + 1, ctx.keypos + 2, ctx.keypos, 0])
    op = pick([int(-3, 3), {pos, int(-3, 3)}, {pos, 1, 2, 0}, [{pos, 1}], :bad])

    if chance(0.4),
      do: {:update_counter, key, op, gen_object(ctx, :ignored)},
      else: {:update_counter, key, op}
  end

  defp gen_update_element(ctx, key) do
    pos = pick([ctx.keypos + 1, ctx.keypos + 2, ctx.keypos, 0])
    {:update_element, key, pick([{pos, gen_value()}, [{pos, :x}], :garbage])}
  end
end
