# NativeStore.Table against :ets set tables, in the same run, same options.
# Run with everything else: `make bench`; alone:
#   MIX_ENV=prod mix run bench/table_bench.exs
Code.require_file("bench_helper.exs", __DIR__)

defmodule TableBench do
  @moduledoc """
  Times `lookup`, `insert`, `insert_new`, `update_counter`, `delete` and
  `take` on `:ets` and `NativeStore.Table`, with 1 process and with one
  process per scheduler, for small values (a 4-field map) and large ones (a
  100-element list, a 1 KB binary), on tables pre-populated with 100k
  entries; then memory per entry for 100k entries of each kind.

  Objects are `{key, value, counter}` with integer keys `0..99_999`, visited
  in a scrambled order (`key(i) = rem(i * 48_271, 100_000)`, a permutation),
  so successive operations do not touch neighbouring keys. With several
  processes each one works on its own slice of the keys.
  """

  alias NativeStore.Table

  @entries 100_000
  @mult 48_271
  @compile {:inline, key: 1}

  @serial_opts [:set, :public]
  @concurrent_opts [:set, :public, {:read_concurrency, true}, {:write_concurrency, true}]

  def run do
    n = BenchHelper.ops(@entries)
    filler = :binary.copy(<<0xAB>>, 1016)

    kinds = [
      {"small map", %{a: 1, b: 2, c: 3, d: 4}},
      {"100-elem list", Enum.to_list(1..100)},
      {"1 KB binary", <<0::64, filler::binary>>}
    ]

    memory(filler)

    for procs <- BenchHelper.process_counts() do
      opts = if procs == 1, do: @serial_opts, else: @concurrent_opts

      rows = Enum.flat_map(kinds, fn {kind, value} -> bench_kind(kind, value, n, procs, opts) end)

      BenchHelper.print_table(rows,
        title:
          "#{procs} process#{if procs > 1, do: "es (one per scheduler, running together)", else: ""}, " <>
            "#{n} ops on #{@entries} entries; both tables `#{inspect(opts)}`",
        note: notes(procs)
      )

      # Honesty check: the concurrency options are not free for ETS on a
      # small machine, so also show the concurrent run with default options.
      if procs > 1 do
        {kind, value} = hd(kinds)

        BenchHelper.print_table(bench_kind(kind, value, n, procs, @serial_opts),
          title:
            "#{procs} processes, #{n} ops, both tables `#{inspect(@serial_opts)}` " <>
              "(no concurrency options: for reference)"
        )
      end
    end

    :ok
  end

  defp notes(1) do
    "_median ns/op; ratio = NativeStore/ETS (< 1: NativeStore faster). " <>
      "insert overwrites existing keys; insert_new adds new keys (table grows from 100k); " <>
      "delete/take remove existing keys (re-inserted, untimed, before each run); " <>
      "update_counter is `{3, 1}` on the object's counter field; " <>
      "info(tab, :size) reads the object count of the 100k-entry table._"
  end

  defp notes(_procs) do
    "_Same as above, aggregate ns/op (wall time / all ops) with every process on its own key slice. " <>
      "ETS gets `read_concurrency` and `write_concurrency`, as a user would pick for a table " <>
      "shared by many processes; NativeStore gets the same options. " <>
      "update_counter (1 hot key) makes every process bump the same counter._"
  end

  defp key(i), do: rem(i * @mult, @entries)

  # ---------------------------------------------------------------- timing

  defp bench_kind(kind, value, n, procs, opts) do
    ets = :ets.new(:bench_ets, opts)
    nat = Table.new(:bench_nat, opts)
    populate(:ets, ets, value, 0, @entries - 1)
    populate(Table, nat, value, 0, @entries - 1)
    :ets.insert(ets, {:hot, value, 0})
    Table.insert(nat, {:hot, value, 0})
    check!(ets, nat, kind)

    refill = fn mod, tab -> fn -> populate(mod, tab, value, 0, n - 1) end end
    clear_new = fn mod, tab -> fn -> delete_loop(mod, tab, @entries, 0, n - 1) end end

    cases = [
      {"lookup", &lookup_loop/5, nil},
      {"insert", &insert_loop/6, nil},
      {"insert_new", &insert_new_loop/6, clear_new},
      {"update_counter", &counter_loop/5, nil},
      {"delete", &delete_loop/5, refill},
      {"take", &take_loop/5, refill}
    ]

    cases =
      if kind == "small map" and procs > 1,
        do: cases ++ [{"update_counter (1 hot key)", &hot_counter_loop/5, nil}],
        else: cases

    # Table-wide reads that code calls often (size checks of caches, queues).
    cases =
      if kind == "small map",
        do: cases ++ [{"info(tab, :size)", &size_loop/5, nil}],
        else: cases

    rows =
      for {op, loop, setup} <- cases do
        {e_work, n_work} = {work(loop, :ets, ets, value), work(loop, Table, nat, value)}

        extra =
          if setup,
            do: [base_setup: setup.(:ets, ets), native_setup: setup.(Table, nat)],
            else: []

        BenchHelper.compare("#{op} — #{kind}", n, procs, e_work, n_work, extra)
      end

    check!(ets, nat, kind)
    :ets.delete(ets)
    Table.delete(nat)
    rows
  end

  defp work(loop, mod, tab, _value) when is_function(loop, 5),
    do: fn first, last -> loop.(mod, tab, 0, first, last) end

  defp work(loop, mod, tab, value) when is_function(loop, 6),
    do: fn first, last -> loop.(mod, tab, value, 0, first, last) end

  # Both tables must agree: same size, same objects on a sample of keys.
  defp check!(ets, nat, kind) do
    es = :ets.info(ets, :size)
    ns = Table.info(nat, :size)
    if es != ns, do: raise("#{kind}: size differs: ets #{es}, native #{ns}")

    for k <- [:hot | Enum.map(0..199, &key(&1 * 487))] do
      e = :ets.lookup(ets, k)
      v = Table.lookup(nat, k)
      if e != v, do: raise("#{kind}: lookup(#{inspect(k)}) differs: #{inspect({e, v})}")
    end

    :ok
  end

  # The loops take the module (`:ets` or `NativeStore.Table`) as an argument,
  # so both sides run the very same code. `_off` keeps the arities uniform.

  defp populate(_m, _t, _v, i, last) when i > last, do: :ok

  defp populate(m, t, v, i, last) do
    m.insert(t, {key(i), v, 0})
    populate(m, t, v, i + 1, last)
  end

  defp lookup_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp lookup_loop(m, t, off, i, last) do
    m.lookup(t, key(i))
    lookup_loop(m, t, off, i + 1, last)
  end

  defp insert_loop(_m, _t, _v, _off, i, last) when i > last, do: :ok

  defp insert_loop(m, t, v, off, i, last) do
    m.insert(t, {key(i), v, 0})
    insert_loop(m, t, v, off, i + 1, last)
  end

  defp insert_new_loop(_m, _t, _v, _off, i, last) when i > last, do: :ok

  defp insert_new_loop(m, t, v, off, i, last) do
    true = m.insert_new(t, {@entries + key(i), v, 0})
    insert_new_loop(m, t, v, off, i + 1, last)
  end

  defp counter_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp counter_loop(m, t, off, i, last) do
    m.update_counter(t, key(i), {3, 1})
    counter_loop(m, t, off, i + 1, last)
  end

  defp hot_counter_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp hot_counter_loop(m, t, off, i, last) do
    m.update_counter(t, :hot, {3, 1})
    hot_counter_loop(m, t, off, i + 1, last)
  end

  defp size_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp size_loop(m, t, off, i, last) do
    m.info(t, :size)
    size_loop(m, t, off, i + 1, last)
  end

  defp delete_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp delete_loop(m, t, off, i, last) do
    m.delete(t, off + key(i))
    delete_loop(m, t, off, i + 1, last)
  end

  defp take_loop(_m, _t, _off, i, last) when i > last, do: :ok

  defp take_loop(m, t, off, i, last) do
    [_] = m.take(t, key(i))
    take_loop(m, t, off, i + 1, last)
  end

  # ---------------------------------------------------------------- memory

  # Bytes per entry for 100k entries: info(tab, :memory) * wordsize / entries,
  # plus the off-heap (refc) binaries the table keeps alive, measured as the
  # growth of :erlang.memory(:binary). The entries are built and inserted by a
  # short-lived process, so once it exits only what the table holds remains.
  # 1 KB binaries are distinct per entry (real data is not one shared binary).
  defp memory(filler) do
    kinds = [
      {"small map", fn _k -> %{a: 1, b: 2, c: 3, d: 4} end},
      {"100-elem list", fn _k -> Enum.to_list(1..100) end},
      {"1 KB binary (distinct)", fn k -> <<k::64, filler::binary>> end}
    ]

    rows =
      for {kind, make} <- kinds do
        {e_tab, e_bin} = footprint(:ets, make)
        {n_tab, n_bin} = footprint(Table, make)
        e = e_tab + e_bin
        n = n_tab + n_bin

        [
          kind,
          BenchHelper.fmt_bytes(e),
          BenchHelper.fmt_bytes(n),
          BenchHelper.fmt_ratio(n, e),
          "#{BenchHelper.fmt_bytes(e_bin)} / #{BenchHelper.fmt_bytes(n_bin)}"
        ]
      end

    BenchHelper.print_markdown(
      [
        "#{@entries} entries `{key, value, 0}`",
        "ETS bytes/entry",
        "NativeStore bytes/entry",
        "ratio native/ETS",
        "of which off-heap binaries (ETS / native)"
      ],
      rows,
      title: "Memory per entry (`[:set, :public]`, #{@entries} entries)",
      note:
        "_bytes/entry = (info(tab, :memory) × wordsize + growth of `:erlang.memory(:binary)`) / entries. " <>
          "ETS keeps binaries over 64 bytes off-heap (shared, reference-counted), so its " <>
          "`info(:memory)` alone would not count them._"
    )
  end

  defp footprint(mod, make) do
    settle()
    bin0 = :erlang.memory(:binary)
    tab = mod.new(:bench_mem, [:set, :public])

    {pid, ref} =
      spawn_monitor(fn ->
        for k <- 0..(@entries - 1), do: mod.insert(tab, {k, make.(k), 0})
      end)

    receive do
      {:DOWN, ^ref, :process, ^pid, :normal} -> :ok
    end

    settle()
    size = mod.info(tab, :size)
    if size != @entries, do: raise("#{inspect(mod)}: #{size} entries, expected #{@entries}")
    words = mod.info(tab, :memory)
    bin = :erlang.memory(:binary) - bin0
    mod.delete(tab)
    wordsize = :erlang.system_info(:wordsize)
    {words * wordsize / @entries, max(bin, 0) / @entries}
  end

  defp settle do
    :erlang.garbage_collect()
    Process.sleep(100)
  end
end
