defmodule NativeStore.TableConcurrencyTest do
  @moduledoc "Many processes on one public table: nothing lost, nothing torn."
  use ExUnit.Case, async: true

  alias NativeStore.Table

  @procs 16

  defp run_all(n, fun) do
    1..n
    |> Enum.map(fn i -> Task.async(fn -> fun.(i) end) end)
    |> Enum.map(&Task.await(&1, 30_000))
  end

  test "concurrent update_counter loses no increment" do
    t = Table.new(:ctr, [:public, {:write_concurrency, true}])
    keys = for k <- 1..8, do: {:counter, k}
    Enum.each(keys, &Table.insert(t, {&1, 0, 0}))
    per_proc = 5_000

    run_all(@procs, fn i ->
      :rand.seed(:exsss, {i, i, i})

      for _ <- 1..per_proc do
        k = Enum.random(keys)
        Table.update_counter(t, k, [{2, 1}, {3, 2}])
      end
    end)

    total = Enum.reduce(keys, 0, fn k, acc -> acc + Table.lookup_element(t, k, 2) end)
    assert total == @procs * per_proc

    for k <- keys,
        do: assert(Table.lookup_element(t, k, 3) == 2 * Table.lookup_element(t, k, 2))
  end

  test "concurrent update_counter/4 with a default creates each key once" do
    t = Table.new(:ctr_default, [:public])

    run_all(@procs, fn _ ->
      for k <- 1..500, do: Table.update_counter(t, k, {2, 1}, {k, 0})
    end)

    assert Table.info(t, :size) == 500
    assert Enum.all?(1..500, &(Table.lookup(t, &1) == [{&1, @procs}]))
  end

  test "concurrent insert/lookup on a public table: readers see whole objects" do
    t = Table.new(:ins, [:public, {:read_concurrency, true}])
    n = 3_000

    writers =
      for w <- 1..4 do
        Task.async(fn ->
          for i <- 1..n do
            Table.insert(t, {{w, i}, i, Integer.to_string(i), List.duplicate(i, 3)})
            Table.insert(t, {:shared, w, i})
          end
        end)
      end

    readers =
      for _ <- 1..4 do
        Task.async(fn ->
          for _ <- 1..n do
            w = Enum.random(1..4)
            i = Enum.random(1..n)

            case Table.lookup(t, {w, i}) do
              [] -> :ok
              [{{^w, ^i}, ^i, s, [^i, ^i, ^i]}] -> ^s = Integer.to_string(i)
            end

            case Table.lookup(t, :shared) do
              [] -> :ok
              [{:shared, w2, i2}] when w2 in 1..4 and i2 in 1..n -> :ok
            end
          end

          :ok
        end)
      end

    Enum.each(writers ++ readers, &Task.await(&1, 30_000))
    assert Table.info(t, :size) == 4 * n + 1

    for w <- 1..4, i <- [1, div(n, 2), n], do: assert(Table.lookup_element(t, {w, i}, 2) == i)
  end

  test "concurrent insert_new: exactly one winner per key" do
    t = Table.new(:ins_new, [:public])

    wins =
      run_all(@procs, fn p ->
        Enum.count(1..1_000, fn k -> Table.insert_new(t, {k, p}) end)
      end)

    assert Enum.sum(wins) == 1_000
  end

  test "concurrent replace/4 CAS loops lose nothing" do
    t = Table.new(:cas, [:public])
    per_proc = 2_000

    # Read, compute, swap; retry when another process got there first.
    cas_incr = fn key, me ->
      Stream.repeatedly(fn ->
        current = Table.lookup(t, key)

        new =
          case current do
            [] -> [{key, 1, me}]
            [{^key, n, _last}] -> [{key, n + 1, me}]
          end

        Table.replace(t, key, current, new)
      end)
      |> Enum.find(& &1)
    end

    run_all(@procs, fn p ->
      for i <- 1..per_proc, do: cas_incr.(rem(i, 3), p)
    end)

    total = Enum.sum(for k <- 0..2, do: Table.lookup_element(t, k, 2))
    assert total == @procs * per_proc
  end

  test "concurrent replace/4 CAS on a growing list keeps every item" do
    t = Table.new(:cas_list, [:public])
    per_proc = 100

    run_all(@procs, fn p ->
      for i <- 1..per_proc do
        Stream.repeatedly(fn ->
          current = Table.lookup(t, :items)
          items = with [{:items, l}] <- current, do: l
          Table.replace(t, :items, current, [{:items, [{p, i} | items]}])
        end)
        |> Enum.find(& &1)
      end
    end)

    [{:items, items}] = Table.lookup(t, :items)
    assert length(items) == @procs * per_proc
    assert MapSet.size(MapSet.new(items)) == @procs * per_proc
  end

  test "concurrent merge_map/3 never loses a key" do
    t = Table.new(:merge, [:public])
    per_proc = 150

    run_all(@procs, fn p ->
      for i <- 1..per_proc do
        Table.merge_map(t, rem(i, 2), %{{p, i} => i, :last => p})
      end
    end)

    [{0, m0}] = Table.lookup(t, 0)
    [{1, m1}] = Table.lookup(t, 1)
    assert map_size(m0) + map_size(m1) == @procs * per_proc + 2

    for p <- 1..@procs, i <- 1..per_proc do
      assert Map.fetch!(if(rem(i, 2) == 0, do: m0, else: m1), {p, i}) == i
    end
  end

  test "concurrent take: each object taken exactly once" do
    t = Table.new(:take, [:public])
    Table.insert(t, for(i <- 1..5_000, do: {i, i}))

    taken =
      run_all(@procs, fn _ ->
        for i <- 1..5_000, [{^i, ^i}] <- [Table.take(t, i)], do: i
      end)

    assert taken |> List.flatten() |> Enum.sort() == Enum.to_list(1..5_000)
    assert Table.info(t, :size) == 0
  end

  for type <- [:bag, :duplicate_bag] do
    @type_opt type
    test "#{type}: concurrent inserts and delete_objects under shared keys end as expected" do
      t = Table.new(:conc_bag, [@type_opt, :public])

      # Every process adds objects under 8 shared keys, deletes every third
      # of its own again, and reads whole objects meanwhile.
      kept =
        run_all(@procs, fn p ->
          for i <- 1..600, reduce: [] do
            acc ->
              obj = {rem(i, 8), p, i, :binary.copy(<<p>>, rem(i, 50))}
              Table.insert(t, obj)

              for {k, q, j, bin} <- Table.lookup(t, rem(i * 7, 8)) do
                true =
                  is_integer(k) and byte_size(bin) == rem(j, 50) and
                    bin == :binary.copy(<<q>>, rem(j, 50))
              end

              if rem(i, 3) == 0 do
                Table.delete_object(t, obj)
                acc
              else
                [obj | acc]
              end
          end
        end)

      expected = kept |> List.flatten() |> Enum.sort()
      assert Enum.sort(Table.tab2list(t)) == expected
      assert Table.info(t, :size) == length(expected)

      # Insertion order per key: each process's objects in its own order.
      for k <- 0..7, p <- 1..@procs do
        mine = for {^k, ^p, i, _} <- Table.lookup(t, k), do: i
        assert mine == Enum.sort(mine)
      end
    end
  end

  for {label, opts} <- [
        {"", []},
        {" (write_concurrency, parts split meanwhile)", [{:write_concurrency, true}]}
      ] do
    test "ordered_set: concurrent inserts and deletes keep term order and every key#{label}" do
      t = Table.new(:conc_ord, [:ordered_set, :public | unquote(opts)])
      parent = self()

      splitter =
        if unquote(opts) != [],
          do: spawn_link(fn -> send(parent, {:parts, split_parts(t, 6, 1)}) end)

      kept =
        run_all(@procs, fn p ->
          for i <- 1..1_000, reduce: [] do
            acc ->
              # Integer keys interleaved across processes, and tuple keys.
              k = if rem(i, 4) == 0, do: {:t, p, i}, else: i * @procs + p
              Table.insert(t, {k, p})
              if rem(i, 5) == 0, do: Table.delete(t, k), else: nil
              if rem(i, 5) == 0, do: acc, else: [k | acc]
          end
        end)

      # The splitter split the table while the writers ran.
      if splitter, do: assert_receive({:parts, parts} when parts >= 2, 30_000)
      expected = kept |> List.flatten() |> Enum.sort()
      assert Enum.map(Table.tab2list(t), &elem(&1, 0)) == expected
      assert Table.info(t, :size) == length(expected)
      assert Enum.map(Table.select(t, [{{:"$1", :_}, [], [:"$1"]}]), & &1) == expected
      assert walk_keys(t, Table.first(t)) == expected
    end
  end

  # Splits every part of an ordered_set in two, `n` times, a little apart,
  # once it holds objects; returns the number of parts.
  defp split_parts(_t, 0, parts), do: parts

  defp split_parts(t, n, parts) do
    Process.sleep(2)

    if Table.info(t, :size) < 100,
      do: split_parts(t, n, parts),
      else: split_parts(t, n - 1, NativeStore.Nif.table_split_parts(t))
  end

  defp walk_keys(_t, :"$end_of_table"), do: []
  defp walk_keys(t, k), do: [k | walk_keys(t, Table.next(t, k))]

  # A long list goes to a dirty scheduler; a process killed there is
  # terminated around the running call (its monitors fire while the call
  # goes on): its insert must then be all or nothing, and over before its
  # `DOWN`, as with ETS (which drops the insert of a process killed while
  # it traps).
  for fun <- [:insert, :insert_new] do
    @fun fun
    test "a process killed inside #{fun}/2 of a long list: nothing changes after its DOWN" do
      n = 100_000

      for type <- [:set, :ordered_set, :bag, :duplicate_bag], attempt <- 0..3 do
        for {mod, t} <- [
              {Table, Table.new(:killed_insert, [type, :public])},
              {:ets, :ets.new(:killed_insert, [type, :public])}
            ] do
          parent = self()

          {pid, ref} =
            spawn_monitor(fn ->
              objs = for i <- 1..n, do: {i, i}
              send(parent, :inserting)
              apply(mod, @fun, [t, objs])
            end)

          assert_receive :inserting, 10_000
          Process.sleep(attempt)
          Process.exit(pid, :kill)
          assert_receive {:DOWN, ^ref, _, _, _}, 10_000
          # Lookups wait for the locks of a write under way.
          seen = {mod.lookup(t, 1), mod.lookup(t, n)}
          # Long enough for a dirty call still running to end.
          Process.sleep(100)
          what = "#{inspect(mod)} #{type}, killed #{attempt} ms in: #{inspect(seen)} at DOWN"
          assert seen in [{[], []}, {[{1, 1}], [{n, n}]}], what
          assert {mod.lookup(t, 1), mod.lookup(t, n)} == seen, what
          assert mod.info(t, :size) == if(seen == {[], []}, do: 0, else: n), what
          mod.delete(t)
        end
      end
    end
  end

  test "the owner dies while 6 processes use its table: they see results or ArgumentError" do
    ops = [
      fn t, i -> Table.insert(t, {rem(i, 50), i, :v}) end,
      fn t, i -> Table.lookup(t, rem(i, 50)) end,
      fn t, i -> Table.update_counter(t, rem(i, 50), {2, 1}, {rem(i, 50), 0, :v}) end,
      fn t, i -> Table.delete(t, rem(i, 50)) end,
      fn t, _ -> Table.select(t, [{{:"$1", :_, :_}, [], [:"$1"]}], 5) end,
      fn t, _ -> Table.tab2list(t) end,
      fn t, _ -> Table.foldl(fn _, a -> a + 1 end, 0, t) end,
      fn t, i -> Table.take(t, rem(i, 50)) end,
      fn t, i -> Table.insert(t, for(j <- 1..20, do: {j + i, j, :v})) end,
      fn t, _ -> Table.first(t) end,
      fn t, _ -> Table.info(t, :size) end
    ]

    for round <- 1..16 do
      type = Enum.at([:set, :ordered_set, :bag, :duplicate_bag], rem(round, 4))
      parent = self()

      owner =
        spawn(fn ->
          send(parent, {:table, Table.new(:owner_dies, [type, :public])})
          receive do: (:die -> exit(:kill_me))
        end)

      t = receive do: ({:table, t} -> t)

      unexpected =
        Task.async_stream(1..6, fn w ->
          for i <- 1..1_500, reduce: [] do
            acc ->
              if w == 1 and i == 300, do: send(owner, :die)

              try do
                Enum.at(ops, rem(i * 7 + w, length(ops))).(t, i)
                acc
              rescue
                ArgumentError -> acc
                e -> [{type, e} | acc]
              end
          end
        end)
        |> Enum.flat_map(fn {:ok, l} -> l end)

      assert unexpected == []
      # The owner's exit deletes the table (its monitor fires as it exits).
      ref = Process.monitor(owner)
      assert_receive {:DOWN, ^ref, _, _, _}, 5_000
      assert wait_until(fn -> Table.info(t) == :undefined end)
    end
  end

  defp wait_until(f, tries \\ 500) do
    cond do
      f.() -> true
      tries == 0 -> false
      true -> Process.sleep(10) && wait_until(f, tries - 1)
    end
  end

  test "tab2list while others write sees a consistent list of whole objects" do
    t = Table.new(:t2l_conc, [:public])
    Table.insert(t, for(i <- 1..20_000, do: {i, i}))

    writer =
      Task.async(fn ->
        for i <- 1..20_000, do: Table.update_counter(t, i, 1)
      end)

    list = Table.tab2list(t)
    Task.await(writer, 30_000)
    assert length(list) == 20_000
    assert Enum.all?(list, fn {k, v} -> v == k or v == k + 1 end)
  end

  test "delete of a table while others use it: they get ArgumentError, no crash" do
    t = Table.new(:del_conc, [:public])
    Table.insert(t, for(i <- 1..1_000, do: {i, i}))

    users =
      for _ <- 1..8 do
        Task.async(fn ->
          Enum.reduce_while(1..100_000, :ok, fn i, _ ->
            try do
              Table.update_counter(t, rem(i, 1_000) + 1, 1)
              Table.lookup(t, rem(i, 1_000) + 1)
              {:cont, :ok}
            rescue
              ArgumentError -> {:halt, :gone}
            end
          end)
        end)
      end

    Process.sleep(20)
    assert Table.delete(t)
    assert Enum.map(users, &Task.await(&1, 30_000)) |> Enum.all?(&(&1 in [:gone, :ok]))
    assert Table.info(t) == :undefined
  end
end
