# NativeStore.Table beyond the set core (issue 3, "Performance"): match
# specifications, scans and folds, ordered_set, bag and duplicate_bag, each
# against :ets in the same run, same options, with the ratio.
# Run with everything else: `make bench`; alone:
#   MIX_ENV=prod mix run bench/table_types_bench.exs
Code.require_file("bench_helper.exs", __DIR__)

defmodule TableTypesBench do
  @moduledoc """
  Point operations (1 process, then one process per scheduler):

    * `select/2` with a bound key on a `:set` of 100k entries;
    * `:ordered_set` insert and lookup, integer keys and `{atom, binary}`
      tuple keys;
    * `:bag` / `:duplicate_bag` insert and lookup (10 objects per key).

  Full scans of 100k entries (1 process): unbound `select/2` with a guard,
  `select_count/2`, `match_object/2`, `tab2list/1`, `foldl/3`, and a whole
  `first/1` + `next/2` walk of an `:ordered_set` (both key kinds).

  Keys are visited in a scrambled order (`key(i) = rem(i * 48_271, 100_000)`,
  a permutation of `0..99_999`). Inserts go into a table emptied (untimed)
  before every run. Issue 3 targets: ratio <= 1.0 on point operations,
  <= 1.5 on full scans.
  """

  alias NativeStore.Table

  @mult 48_271
  @tags List.to_tuple(for i <- 0..99, do: :"tag#{i}")
  @atoms {:users, :orders, :items, :carts, :sessions, :events, :jobs, :logs}
  @per_key 10

  defp entries, do: BenchHelper.ops(100_000)
  defp key(i, n), do: rem(i * @mult, n)

  def run do
    n = entries()
    tuple_keys = List.to_tuple(for j <- 0..(n - 1), do: tuple_key(j))

    for procs <- BenchHelper.process_counts() do
      opts =
        if procs == 1,
          do: [:public],
          else: [:public, {:read_concurrency, true}, {:write_concurrency, true}]

      rows = point_rows(n, procs, opts, tuple_keys)

      BenchHelper.print_table(rows,
        title:
          "Point operations, #{procs} process#{if procs > 1, do: "es (one per scheduler, running together)", else: ""}, " <>
            "#{n} ops on #{n}-entry tables; both sides `[type | #{inspect(opts)}]`",
        note: point_note(procs)
      )
    end

    BenchHelper.print_table(scan_rows(n, tuple_keys),
      title: "Full scans of #{n} entries, 1 process (µs per scan or walk)",
      unit: {"µs/scan", 1_000},
      note:
        "_set objects `{k, k, tag, %{n: k}}` with 100 distinct tags; the guard and the " <>
          "match_object pattern each select 1% of the objects. A walk is `first/1` then " <>
          "`next/2` until `:\"$end_of_table\"` (#{n} calls)._"
    )

    :ok
  end

  defp point_note(1) do
    "_median ns/op; ratio = NativeStore/ETS (< 1: NativeStore faster). select (bound key) is " <>
      "`[{{k, :_, :_, :\"$1\"}, [], [:\"$1\"]}]` on a set; inserts add new keys to an emptied " <>
      "table; bag objects are `{rem(k, #{div(entries(), @per_key)}), i}` " <>
      "(#{@per_key} per key), lookup returns all #{@per_key}; select_reverse (limit 10) " <>
      "returns the 10 greatest integer keys of #{entries()} (ns per call, n/20 calls)._"
  end

  defp point_note(_),
    do:
      "_aggregate ns/op (wall time / all ops), each process on its own slice of the keys; " <>
        "ETS and NativeStore both get `read_concurrency` and `write_concurrency`._"

  defp tuple_key(j), do: {elem(@atoms, rem(j, 8)), "id-" <> Integer.to_string(j)}

  # ---------------------------------------------------------------- points

  defp point_rows(n, procs, opts, tuple_keys) do
    n_keys = div(n, @per_key)

    # A set for select-with-bound-key, populated once.
    {es, ns} = pair(:set, opts)
    fill(es, ns, n, &set_object/1)

    rows = [
      BenchHelper.compare(
        "set: select, bound key",
        n,
        procs,
        fn f, l -> select_key(:ets, es, n, f, l) end,
        fn f, l -> select_key(Table, ns, n, f, l) end
      )
    ]

    drop(es, ns)

    # select_reverse with a limit on an ordered_set: the last 10 objects.
    {eo, no} = pair(:ordered_set, opts)
    fill(eo, no, n, fn i -> {i, i} end)
    last10 = [{{:"$1", :_}, [], [:"$1"]}]
    # The same with a number guard (a spec the scan can pre-filter).
    guarded = [{{:"$1", :"$2"}, [{:>, :"$2", 0}], [:"$1"]}]
    m = max(div(n, 20), 1)

    rows =
      rows ++
        for {label, ms} <- [{"", last10}, {", number guard", guarded}] do
          BenchHelper.compare(
            "ordered_set: select_reverse, limit 10#{label}",
            m,
            procs,
            fn f, l -> select_last(:ets, eo, ms, f, l) end,
            fn f, l -> select_last(Table, no, ms, f, l) end
          )
        end

    drop(eo, no)

    os_cases = [
      {"integer keys", fn i -> key(i, n) end},
      {"{atom, binary} keys", fn i -> elem(tuple_keys, key(i, n)) end}
    ]

    os_rows =
      Enum.flat_map(os_cases, fn {kind, k} ->
        insert_lookup(
          "ordered_set",
          kind,
          :ordered_set,
          opts,
          n,
          procs,
          fn i -> {k.(i), i} end,
          k
        )
      end)

    bag_rows =
      for type <- [:bag, :duplicate_bag] do
        insert_lookup(
          "#{type}",
          "#{@per_key} objects per key",
          type,
          opts,
          n,
          procs,
          fn i -> {rem(key(i, n), n_keys), i} end,
          fn i -> rem(key(i, n), n_keys) end
        )
      end

    rows ++ os_rows ++ List.flatten(bag_rows)
  end

  # Insert into an emptied table (untimed `delete_all_objects` before every
  # run), then lookup on a table holding all `n` objects.
  defp insert_lookup(type_label, kind, type, opts, n, procs, object, lookup_key) do
    {ei, ni} = pair(type, opts)
    clear = fn mod, t -> fn -> mod.delete_all_objects(t) end end

    insert =
      BenchHelper.compare(
        "#{type_label} insert, #{kind}",
        n,
        procs,
        fn f, l -> insert_loop(:ets, ei, object, f, l) end,
        fn f, l -> insert_loop(Table, ni, object, f, l) end,
        base_setup: clear.(:ets, ei),
        native_setup: clear.(Table, ni)
      )

    drop(ei, ni)
    {el, nl} = pair(type, opts)
    fill(el, nl, n, object)
    check_lookup!(el, nl, lookup_key, n)

    lookup =
      BenchHelper.compare(
        "#{type_label} lookup, #{kind}",
        n,
        procs,
        fn f, l -> lookup_loop(:ets, el, lookup_key, f, l) end,
        fn f, l -> lookup_loop(Table, nl, lookup_key, f, l) end
      )

    drop(el, nl)
    [insert, lookup]
  end

  # ---------------------------------------------------------------- scans

  defp scan_rows(n, tuple_keys) do
    # Few scans per run: one scan is a whole-table operation (milliseconds).
    scans = 3
    {es, ns} = pair(:set, [:public])
    fill(es, ns, n, &set_object/1)
    limit = div(n, 100)

    guard_spec = [{{:"$1", :"$2", :_, :_}, [{:<, :"$2", limit}], [:"$1"]}]
    count_spec = [{{:_, :"$1", :_, :_}, [{:<, :"$1", limit}], [true]}]
    pattern = {:_, :_, :tag7, :_}
    fold = fn {_, v, _, _}, acc -> acc + v end

    check!("select", length(:ets.select(es, guard_spec)), length(Table.select(ns, guard_spec)))
    check!("select_count", :ets.select_count(es, count_spec), Table.select_count(ns, count_spec))

    check!(
      "match_object",
      length(:ets.match_object(es, pattern)),
      length(Table.match_object(ns, pattern))
    )

    check!("tab2list", length(:ets.tab2list(es)), length(Table.tab2list(ns)))
    check!("foldl", :ets.foldl(fold, 0, es), Table.foldl(fold, 0, ns))

    cases = [
      {"set: select, unbound, guard (1% match)", fn m, t -> m.select(t, guard_spec) end},
      {"set: select_count, guard (1% match)", fn m, t -> m.select_count(t, count_spec) end},
      {"set: match_object, unbound (1% match)", fn m, t -> m.match_object(t, pattern) end},
      {"set: tab2list", fn m, t -> m.tab2list(t) end},
      {"set: foldl (sum a field)", fn m, t -> m.foldl(fold, 0, t) end}
    ]

    rows =
      for {label, op} <- cases do
        BenchHelper.compare(
          "#{label}, #{n} entries",
          scans,
          1,
          fn f, l -> repeat(fn -> op.(:ets, es) end, f, l) end,
          fn f, l -> repeat(fn -> op.(Table, ns) end, f, l) end
        )
      end

    drop(es, ns)

    walks =
      for {kind, k} <- [
            {"integer keys", fn i -> i end},
            {"{atom, binary} keys", fn i -> elem(tuple_keys, i) end}
          ] do
        {eo, no} = pair(:ordered_set, [:public])
        fill(eo, no, n, fn i -> {k.(i), i} end)
        check!("walk #{kind}", walk(:ets, eo), walk(Table, no))

        row =
          BenchHelper.compare(
            "ordered_set: first + next walk, #{kind}, #{n} entries",
            scans,
            1,
            fn f, l -> repeat(fn -> walk(:ets, eo) end, f, l) end,
            fn f, l -> repeat(fn -> walk(Table, no) end, f, l) end
          )

        drop(eo, no)
        row
      end

    rows ++ walks
  end

  defp repeat(_fun, i, last) when i > last, do: :ok

  defp repeat(fun, i, last) do
    fun.()
    repeat(fun, i + 1, last)
  end

  # Counts the keys visited by first/next.
  defp walk(m, t), do: walk(m, t, m.first(t), 0)
  defp walk(_m, _t, :"$end_of_table", acc), do: acc
  defp walk(m, t, k, acc), do: walk(m, t, m.next(t, k), acc + 1)

  # ---------------------------------------------------------------- helpers

  defp set_object(k), do: {k, k, elem(@tags, rem(k, 100)), %{n: k}}

  defp pair(type, opts) do
    {:ets.new(:bench_types_ets, [type | opts]), Table.new(:bench_types_nat, [type | opts])}
  end

  defp drop(e, n) do
    :ets.delete(e)
    Table.delete(n)
  end

  defp fill(e, n, count, object) do
    for i <- 0..(count - 1) do
      o = object.(i)
      :ets.insert(e, o)
      Table.insert(n, o)
    end

    check!("size", :ets.info(e, :size), Table.info(n, :size))
  end

  defp check!(_what, same, same), do: :ok

  defp check!(what, e, n),
    do: raise("#{what} differs between ETS and NativeStore: #{inspect(e)} vs #{inspect(n)}")

  defp check_lookup!(e, n, lookup_key, count) do
    for i <- Enum.take_every(0..(count - 1), 997) do
      k = lookup_key.(i)
      check!("lookup(#{inspect(k)})", :ets.lookup(e, k), Table.lookup(n, k))
    end
  end

  defp select_key(_m, _t, _n, i, last) when i > last, do: :ok

  defp select_key(m, t, n, i, last) do
    [_] = m.select(t, [{{key(i, n), :_, :_, :"$1"}, [], [:"$1"]}])
    select_key(m, t, n, i + 1, last)
  end

  defp select_last(_m, _t, _ms, i, last) when i > last, do: :ok

  defp select_last(m, t, ms, i, last) do
    {[_ | _], _} = m.select_reverse(t, ms, 10)
    select_last(m, t, ms, i + 1, last)
  end

  defp insert_loop(_m, _t, _obj, i, last) when i > last, do: :ok

  defp insert_loop(m, t, obj, i, last) do
    m.insert(t, obj.(i))
    insert_loop(m, t, obj, i + 1, last)
  end

  defp lookup_loop(_m, _t, _k, i, last) when i > last, do: :ok

  defp lookup_loop(m, t, k, i, last) do
    m.lookup(t, k.(i))
    lookup_loop(m, t, k, i + 1, last)
  end
end

# bench/run.exs calls TableTypesBench.run/0 itself; run it here only when this
# file is the script given to `mix run`.
if Enum.any?(
     :init.get_plain_arguments(),
     &(Path.basename(to_string(&1)) == "table_types_bench.exs")
   ) do
  TableTypesBench.run()
end
