defmodule NativeStore.TableDifferentialTest do
  @moduledoc """
  Differential property test: random operation sequences run on an `:ets`
  set table (the oracle) and on a `NativeStore.Table` created with the same
  options; every result, and every raised exception module, must agree.

  Replay one failing case with

      SEED=1234 mix test test/native_store/table_differential_test.exs

  Knobs (environment variables): `SEED` (run only that seed), `SEEDS`
  (number of seeds, default 300), `OPS` (operations per seed, default 500).
  Inputs that hit the bugs 1-4 of table_known_bugs_test.exs (all fixed)
  are generated always.
  """
  use ExUnit.Case, async: true

  import Bitwise
  import NativeStore.Test.Differential
  alias NativeStore.Table

  @moduletag timeout: 300_000

  # ------------------------------------------------------------------
  # The test

  test "random operation sequences agree with :ets" do
    seeds = seeds(300)
    n = ops_per_seed(500)
    {micros, total} = :timer.tc(fn -> Enum.reduce(seeds, 0, &(run_seed(&1, n) + &2)) end)

    IO.puts(
      "\n[differential] #{total} random operations over #{length(seeds)} seeds " <>
        "in #{div(micros, 1000)} ms"
    )

    unless single_seed?(), do: assert(total >= 100_000)
  end

  defp run_seed(seed, n) do
    :rand.seed(:exsss, {seed, seed * 7 + 1, seed * 13 + 2})
    Process.delete(:diff_history)
    keypos = Enum.at([1, 1, 2, 2, 3], rem(seed, 5))
    access = if rem(seed, 3) == 0, do: :protected, else: :public
    opts = [:set, access, {:keypos, keypos}]
    ets = :ets.new(:diff_oracle, opts)
    nst = Table.new(:diff_native, opts)
    pool = key_pool()
    # A few groups of keys kept in external term format, each group terms
    # that are one key made differently (picked from small pools so that
    # they collide often).
    groups = ext_key_groups()
    ext = for _ <- 1..6, do: pick(groups)
    Process.put(:diff_ext, ext)
    ctx = %{seed: seed, keypos: keypos, pool: pool, ext: ext, opts: opts, ets: ets}

    try do
      Enum.each(1..n, fn i ->
        op = gen_op(ctx)
        compare!(ctx, i, op, ets, nst)
      end)

      final = {:tab2list}
      compare!(ctx, n + 1, final, ets, nst)
      n + 1
    after
      :ets.delete(ets)
      Table.delete(nst)
    end
  end

  defp compare!(ctx, i, op, ets, nst) do
    before = key_state(op, ets, nst)
    expected = run(:ets, ets, op)
    actual = run(Table, nst, op)
    Process.put(:diff_history, [{i, op, expected} | Process.get(:diff_history, [])])

    unless same?(expected, actual) do
      flunk("""
      NativeStore.Table differs from :ets
        seed:     #{ctx.seed}   (replay: SEED=#{ctx.seed} mix test #{__ENV__.file})
        options:  #{inspect(ctx.opts)}
        op ##{i}:  #{inspect(op, limit: :infinity, printable_limit: 200)}
        :ets:     #{inspect(expected, limit: :infinity, printable_limit: 200)}
        native:   #{inspect(actual, limit: :infinity, printable_limit: 200)}
        before the op, {:ets, native} lookups of its key:
                  #{inspect(before, limit: :infinity, printable_limit: 200)}
        earlier ops of this seed on the same key (and table-wide ops), oldest first:
      #{history(op)}
      """)
    end
  end

  # The ops of the current seed that mention the failing op's key.
  defp history(op) do
    key = if tuple_size(op) >= 2, do: inspect(elem(op, 1), limit: :infinity), else: ""

    Process.get(:diff_history, [])
    |> Enum.reverse()
    |> Enum.filter(fn {_, o, _} ->
      tuple_size(o) == 1 or String.contains?(inspect(o, limit: :infinity), key)
    end)
    |> Enum.map_join("\n", fn {i, o, r} ->
      "    ##{i} #{inspect(o, limit: :infinity, printable_limit: 80)} -> #{inspect(r, limit: 20)}"
    end)
  end

  defp key_state(op, ets, nst)
       when tuple_size(op) >= 2 and elem(op, 0) != :insert and
              elem(op, 0) != :insert_new and
              elem(op, 0) != :delete_object do
    k = elem(op, 1)
    {:ets.lookup(ets, k), run(Table, nst, {:lookup, k})}
  end

  defp key_state(_op, _ets, _nst), do: :not_applicable

  # Results are compared exactly (same?/2), tab2list after a canonical sort.
  defp run(mod, tab, op), do: outcome(fn -> apply_op(mod, tab, op) end)

  defp apply_op(m, t, {:insert, objs}), do: m.insert(t, objs)
  defp apply_op(m, t, {:insert_new, objs}), do: m.insert_new(t, objs)
  defp apply_op(m, t, {:lookup, k}), do: m.lookup(t, k)
  defp apply_op(m, t, {:lookup_element, k, pos}), do: m.lookup_element(t, k, pos)
  defp apply_op(m, t, {:member, k}), do: m.member(t, k)
  defp apply_op(m, t, {:take, k}), do: m.take(t, k)
  defp apply_op(m, t, {:delete, k}), do: m.delete(t, k)
  defp apply_op(m, t, {:delete_object, o}), do: m.delete_object(t, o)
  defp apply_op(m, t, {:delete_all_objects}), do: m.delete_all_objects(t)
  defp apply_op(m, t, {:update_counter, k, op}), do: m.update_counter(t, k, op)
  defp apply_op(m, t, {:update_counter, k, op, d}), do: m.update_counter(t, k, op, d)
  defp apply_op(m, t, {:update_element, k, spec}), do: m.update_element(t, k, spec)
  defp apply_op(m, t, {:tab2list}), do: canonical_sort(m.tab2list(t))
  defp apply_op(m, t, {:info_size}), do: m.info(t, :size)
  defp apply_op(m, t, {:info_stats}), do: stats_shape(m.info(t, :stats))

  defp apply_op(m, t, {:fixed_walk, plan}) do
    met = fixed_walk(m, t, plan)
    # The walk's own keys are dropped after the unfix, to keep tables small.
    for objs <- elem(plan, 0),
        o <- objs,
        do: m.delete(t, o |> Tuple.to_list() |> Enum.find(&fresh_walk_key?/1))

    {fixed_walk_summary(met), m.info(t, :size)}
  end

  # ------------------------------------------------------------------
  # Generators. Everything is drawn from :rand, seeded per seed; pick/1,
  # chance/1, int/2, weighted/1 and deep/2 come from
  # NativeStore.Test.Differential.

  @big_base String.duplicate("0123456789abcdef", 64)

  # Keys designed to collide in interesting ways, plus random terms.
  defp key_pool do
    dead_pid = spawn(fn -> :ok end)
    ref = make_ref()
    x = int(0, 5)
    big = :binary.copy(@big_base)
    sub = binary_part(big, 3, 100)
    bits = <<int(0, 255)::8, int(0, 7)::3>>
    <<_::5, subbits::bitstring>> = <<int(0, 31)::5, bits::bitstring>>

    fixed = [
      1,
      1.0,
      0,
      0.0,
      -0.0,
      -1,
      -1.0,
      {0.0},
      {-0.0},
      [-0.0],
      [0.0 | -0.0],
      %{a: -0.0},
      %{a: 0.0},
      %{-0.0 => 1},
      %{0.0 => 1},
      :a,
      :b,
      nil,
      true,
      :"an atom with spaces and ünicode",
      "",
      "a",
      "abc",
      sub,
      :binary.copy(sub),
      binary_part(big, 0, 1),
      big,
      bits,
      subbits,
      <<>>,
      1 <<< 64,
      -(1 <<< 64),
      (1 <<< 63) - 1,
      1 <<< 63,
      -(1 <<< 63),
      -(1 <<< 63) - 1,
      1 <<< 200,
      -(1 <<< 200) + 7,
      {},
      [],
      [1, 2, 3],
      [1 | 2],
      [1, 2 | :tail],
      {1, {2, {3, [4, {5}]}}},
      {:a, "b", [:c]},
      big_map(x),
      big_map(x + 1),
      big_map_with_zero(0.0),
      big_map_with_zero(-0.0),
      self(),
      dead_pid,
      ref,
      make_ref(),
      &Enum.map/2,
      fn -> x end,
      fn y -> {x, y} end,
      deep(70, :leaf),
      deep(70, 1.0)
    ]

    # Bug 1 (fixed): -0.0 deeper than 64 levels or captured by a fun was not
    # found by the 0.0 spelling of the same key (and vice versa).
    zero = 0.0
    neg = -0.0
    bug_keys = [deep(70, zero), deep(70, neg), fn -> zero end, fn -> neg end]

    random = for _ <- 1..20, do: rand_term(3)
    List.to_tuple(fixed ++ bug_keys ++ random)
  end

  defp big_map(salt), do: Map.new(1..40, fn i -> {i * (salt + 1), {:v, i}} end)
  defp big_map_with_zero(z), do: Map.put(Map.new(1..35, &{{:k, &1}, &1}), z, :zero)

  defp rand_term(depth) do
    kinds =
      if depth <= 0,
        do: [:int, :int, :neg, :float, :atom, :bin, :bignum, :zero],
        else: [
          :int,
          :int,
          :neg,
          :float,
          :atom,
          :bin,
          :bignum,
          :zero,
          :tuple,
          :list,
          :improper,
          :map,
          :bits,
          :subbin,
          :pid,
          :ref,
          :bigbin
        ]

    case pick(kinds) do
      :int -> int(0, 10)
      :neg -> -int(1, 1_000_000)
      :float -> pick([1.0, 1.5, -2.5, 1.0e300, 3.0])
      :zero -> pick([0, 0.0, -0.0])
      :atom -> pick([:a, :b, :c, nil, false, :ok])
      :bin -> :rand.bytes(int(0, 12))
      :bigbin -> :rand.bytes(int(64, 300))
      :subbin -> binary_part(:rand.bytes(200), int(0, 50), int(0, 100))
      :bits -> <<int(0, 1023)::size(int(1, 10))>>
      :bignum -> pick([1, -1]) * ((1 <<< int(64, 120)) + int(0, 1000))
      :tuple -> List.to_tuple(for _ <- 1..int(0, 3), do: rand_term(depth - 1))
      :list -> for _ <- 1..int(0, 3), do: rand_term(depth - 1)
      :improper -> [rand_term(depth - 1) | rand_term(0)]
      :map -> Map.new(1..int(0, 4), fn _ -> {rand_term(depth - 1), rand_term(depth - 1)} end)
      :pid -> self()
      :ref -> make_ref()
    end
  end

  defp gen_key(ctx) do
    cond do
      chance(0.08) -> pick(pick(ctx.ext))
      chance(0.9) -> elem(ctx.pool, :rand.uniform(tuple_size(ctx.pool)) - 1)
      true -> rand_term(2)
    end
  end

  # A value element of an object: mostly counters so update_counter works.
  defp gen_value do
    weighted([
      {6, int(-100, 100)},
      {1, (1 <<< 63) - int(1, 3)},
      {1, -(1 <<< 63) + int(0, 2)},
      {1, (1 <<< 100) + int(0, 9)},
      {1, -(1 <<< 90)},
      {2, rand_term(2)},
      {2, :large},
      {1, :ext}
    ])
    |> case do
      :large -> large_binary()
      :ext -> pick(pick(Process.get(:diff_ext)))
      v -> v
    end
  end

  # Large binaries as values (kept out of line by NativeStore's set
  # tables): around the 64/65-byte heap-binary limit, up to a few KB,
  # sub-binaries, and one binary shared by many objects.
  defp large_binary do
    case int(0, 5) do
      0 -> :binary.copy(<<int(0, 255)>>, pick([63, 64, 65, 66]))
      1 -> binary_part(@big_base, int(0, 100), int(65, 900))
      2 -> Process.get(:shared_large) || put_shared_large()
      _ -> :rand.bytes(int(65, 3000))
    end
  end

  defp put_shared_large do
    b = :rand.bytes(1024)
    Process.put(:shared_large, b)
    b
  end

  defp gen_object(ctx, key), do: object(ctx.keypos, key, 4, &gen_value/0)

  # Sometimes malformed: too short for keypos, or not a tuple.
  defp gen_object_maybe_bad(ctx, key) do
    weighted([
      {30, fn -> gen_object(ctx, key) end},
      {1, fn -> List.to_tuple(List.duplicate(key, ctx.keypos - 1)) end},
      {1, fn -> pick([:not_a_tuple, [key], %{key => 1}]) end}
    ]).()
  end

  defp gen_objects(ctx) do
    objs =
      for(_ <- 1..int(0, 5), do: gen_object_maybe_bad(ctx, gen_key(ctx)))
      # ETS leaves undefined which object a set keeps when one list holds
      # several with one key (the last or the first, depending on how the
      # insert is scheduled): one object per key (=:=).
      |> distinct_keys(ctx.keypos, &(&1 === &2))

    # Bug 4 (fixed): an improper list of objects panicked in the NIF.
    if objs != [] and chance(0.05),
      do: objs ++ :tail,
      else: objs
  end

  defp stored(ctx, key) do
    case :ets.lookup(ctx.ets, key) do
      [obj] -> obj
      [] -> nil
    end
  end

  defp gen_op(ctx) do
    key = gen_key(ctx)

    weighted([
      {8, fn -> {:insert, gen_object_maybe_bad(ctx, key)} end},
      {3, fn -> {:insert, gen_objects(ctx)} end},
      {3, fn -> {:insert_new, gen_object_maybe_bad(ctx, key)} end},
      {2, fn -> {:insert_new, gen_objects(ctx)} end},
      {8, fn -> {:lookup, key} end},
      {5, fn -> {:lookup_element, key, gen_pos(ctx, key)} end},
      {4, fn -> {:member, key} end},
      {3, fn -> {:take, key} end},
      {3, fn -> {:delete, key} end},
      {4, fn -> {:delete_object, gen_delete_object(ctx, key)} end},
      {1, fn -> if chance(0.2), do: {:delete_all_objects}, else: {:info_size} end},
      {14, fn -> gen_update_counter(ctx, key) end},
      {8, fn -> gen_update_element(ctx, key) end},
      {1, fn -> {:tab2list} end},
      {2, fn -> {:info_size} end},
      {1, fn -> {:info_stats} end},
      {1, fn -> {:fixed_walk, gen_walk_plan(ctx.ets, ctx.keypos, &gen_object(ctx, &1))} end}
    ]).()
  end

  defp gen_pos(ctx, key) do
    arity =
      case stored(ctx, key) do
        nil -> ctx.keypos + 2
        obj -> tuple_size(obj)
      end

    weighted([
      {10, int(1, arity)},
      {1, 0},
      {1, -1},
      {1, arity + 1},
      {1, 1 <<< 70},
      {1, pick([1.0, :a, "1"])}
    ])
  end

  defp gen_delete_object(ctx, key) do
    case stored(ctx, key) do
      nil ->
        gen_object_maybe_bad(ctx, key)

      obj ->
        weighted([
          {4, obj},
          # Same object with an equal-but-not-identical element.
          {2, mutate(obj, ctx.keypos)},
          {1, gen_object_maybe_bad(ctx, key)}
        ])
    end
  end

  defp mutate(obj, keypos) do
    positions = for i <- 1..tuple_size(obj), i != keypos, do: i

    case positions do
      [] ->
        obj

      _ ->
        p = pick(positions)

        v =
          case elem(obj, p - 1) do
            i when is_integer(i) and abs(i) < 1 <<< 50 -> pick([i * 1.0, i + 1])
            f when is_float(f) -> pick([-f, f + 1])
            _ -> :mutated
          end

        put_elem(obj, p - 1, v)
    end
  end

  # A counter position of the stored object (or a plausible one), or a bad one.
  defp counter_pos(ctx, obj) do
    arity = if obj, do: tuple_size(obj), else: ctx.keypos + 2

    int_positions =
      if obj,
        do: for(i <- 1..arity, i != ctx.keypos, is_integer(elem(obj, i - 1)), do: i),
        else: for(i <- 1..arity, i != ctx.keypos, do: i)

    if int_positions != [] and chance(0.85) do
      pick(int_positions)
    else
      # Bad: the key position, past the end, zero, or a non-integer element.
      pick([ctx.keypos, arity + 1, 0, -1, int(1, arity)])
    end
  end

  defp incr do
    weighted([
      {10, int(-10, 10)},
      {1, pick([1 <<< 40, -(1 <<< 40), (1 <<< 62) + 1, -(1 <<< 62)])},
      # Not an integer: both must raise.
      {1, pick([1.0, :one, "1"])}
    ])
  end

  defp counter_op(ctx, obj) do
    pos = counter_pos(ctx, obj)

    weighted([
      {3, {pos, incr()}},
      {2, {pos, incr(), int(-20, 20), int(-50, 50)}},
      {1, pick([{pos}, {pos, 1, 2}, {pos, 1, 2, 3, 4}, {1.0, 1}, {:a, 1}])}
    ])
  end

  defp gen_update_counter(ctx, key) do
    obj = stored(ctx, key)

    op =
      weighted([
        {4, incr()},
        {4, counter_op(ctx, obj)},
        {3, for(_ <- 1..int(0, 4), do: counter_op(ctx, obj))},
        {1, pick([:bad, [1], [{2}]])},
        # Bug 4 (fixed): an improper list panicked in the NIF (ErlangError
        # :nif_panicked instead of ArgumentError).
        {1, pick([[1 | 2], [{2, 1} | :tail]])}
      ])

    if chance(0.35) do
      default = gen_default(ctx, obj)
      {:update_counter, key, op, default}
    else
      {:update_counter, key, op}
    end
  end

  defp gen_default(ctx, obj) do
    good = gen_object(ctx, pick([:ignored_key, 1, -0.0]))
    short = if ctx.keypos > 1, do: [List.to_tuple(List.duplicate(0, ctx.keypos - 1))], else: []

    bad =
      cond do
        # Missing key: both must raise. Never a tuple shorter than keypos:
        # OTP 25.2's :ets inserts it anyway (`{0, -6}` in a keypos-3 table),
        # and `{}` even corrupts the VM's heap ("size_object: bad tag").
        obj == nil -> [:not_a_tuple, [good]]
        # Existing key: :ets ignores a short default. Bug 2 (fixed): with a
        # non-tuple default :ets raises but NativeStore updated the counter.
        true -> short ++ [:not_a_tuple, [good]]
      end

    if bad != [] and chance(0.1), do: pick(bad), else: good
  end

  defp gen_update_element(ctx, key) do
    obj = stored(ctx, key)
    arity = if obj, do: tuple_size(obj), else: ctx.keypos + 2

    good_positions =
      case for i <- 1..arity, i != ctx.keypos, do: i do
        [] -> [ctx.keypos + 1]
        ps -> ps
      end

    good_spec = fn -> {pick(good_positions), gen_value()} end

    bad_spec = fn ->
      pick([
        {ctx.keypos, :x},
        {arity + 1, :x},
        {0, :x},
        {1.0, :x},
        {2},
        {2, :x, :y},
        :garbage
      ])
    end

    # Bug 3 (fixed): on a missing key :ets returns false whatever the spec;
    # NativeStore validated the spec first and raised.
    spec =
      weighted([
        {4, good_spec.()},
        {4, for(_ <- 1..int(0, 3), do: good_spec.())},
        {2, bad_spec.()},
        {1, [good_spec.(), bad_spec.()]},
        # Bug 4 (fixed: an improper list panicked).
        {1, [good_spec.() | :improper]}
      ])

    {:update_element, key, spec}
  end
end
