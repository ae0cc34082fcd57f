defmodule NativeStore.TableFixationTest do
  @moduledoc """
  `safe_fixtable/2` and the fixation items of `info/2`, against `:ets` (the
  oracle) doing the same: walks that delete what they visit, fixations
  counted per process and ended by the process's exit, errors.
  """
  use ExUnit.Case, async: true

  alias NativeStore.Table

  @hash_types [:set, :bag, :duplicate_bag]
  @types [:ordered_set | @hash_types]

  defp both(type, objects) do
    e = :ets.new(:fix_oracle, [type, :public])
    t = Table.new(:fix_native, [type, :public])
    :ets.insert(e, objects)
    Table.insert(t, objects)
    {e, t}
  end

  defp outcome(fun) do
    {:ok, fun.()}
  rescue
    e -> {:raise, e.__struct__}
  end

  # Walks the table with first/next, calling `visit.(key)` before stepping
  # from each key; returns the keys visited, in order.
  defp walk(mod, tab, visit) do
    Stream.unfold(mod.first(tab), fn
      :"$end_of_table" ->
        nil

      k ->
        visit.(k)
        {k, mod.next(tab, k)}
    end)
    |> Enum.to_list()
  end

  defp objects(n, type) do
    base = for i <- 1..n, do: {i, rem(i, 3)}
    if type in [:bag, :duplicate_bag], do: base ++ for(i <- 1..n, do: {i, :x}), else: base
  end

  # Ways of removing the key being visited.
  defp removers do
    [
      delete: fn mod, tab, k -> mod.delete(tab, k) end,
      take: fn mod, tab, k -> mod.take(tab, k) end,
      select_delete: fn mod, tab, k -> mod.select_delete(tab, [{{k, :_}, [], [true]}]) end,
      match_delete: fn mod, tab, k -> mod.match_delete(tab, {k, :_}) end,
      delete_object: fn mod, tab, k ->
        for o <- mod.lookup(tab, k), do: mod.delete_object(tab, o)
      end
    ]
  end

  describe "a fixed table's walk may delete what it visits" do
    test "every key is visited once, as in ETS, whatever removes it" do
      for type <- @types, {how, remove} <- removers() do
        objs = objects(3000, type)
        {e, t} = both(type, objs)
        true = :ets.safe_fixtable(e, true)
        true = Table.safe_fixtable(t, true)

        ew = walk(:ets, e, &remove.(:ets, e, &1))
        nw = walk(Table, t, &remove.(Table, t, &1))

        assert length(nw) == length(ew), "#{type} #{how}"
        assert Enum.sort(nw) == Enum.sort(ew), "#{type} #{how}"
        if type == :ordered_set, do: assert(nw == ew)
        assert Table.info(t, :size) == 0 and :ets.info(e, :size) == 0

        # Unfixed: a deleted key is no place to go on from any more.
        Table.safe_fixtable(t, false)
        :ets.safe_fixtable(e, false)
        k = hd(ew)

        assert outcome(fn -> Table.next(t, k) end) == outcome(fn -> :ets.next(e, k) end),
               "#{type} #{how}"
      end
    end

    test "shards emptied while fixed give their memory back once unfixed" do
      t = Table.new(:fix_shrink, [:public])
      Table.insert(t, for(i <- 1..100_000, do: {i}))
      full = Table.info(t, :memory)
      Table.safe_fixtable(t, true)
      for i <- 1..99_000, do: Table.delete(t, i)
      # Fixed: the objects are freed, the slots stay (the walk's places
      # stay valid).
      fixed = Table.info(t, :memory)
      assert fixed > full * 0.3
      Table.safe_fixtable(t, false)
      wait_until(fn -> Table.info(t, :memory) < fixed * 0.1 end)
      assert Table.info(t, :size) == 1000
    end

    test "a table purged by select_delete/2 (which fixes it) gives its memory back" do
      # Found by review: removals while fixed leave shards sparse; the unfix
      # left their shrinking to their next writes, so a table purged by a
      # scan and then only read kept its memory.
      t = Table.new(:fix_purge, [:public])
      Table.insert(t, for(i <- 1..400_000, do: {i, i}))
      full = Table.info(t, :memory)
      ms = [{{:"$1", :_}, [{:>, {:rem, :"$1", 16}, 0}], [true]}]
      assert Table.select_delete(t, ms) == 375_000
      assert Table.info(t, :fixed) == false
      assert Table.info(t, :memory) < full / 4
      assert Table.info(t, :size) == 25_000
    end

    test "a key that never was in the table still raises, as in ETS" do
      for type <- @types do
        {e, t} = both(type, objects(50, type))
        :ets.safe_fixtable(e, true)
        Table.safe_fixtable(t, true)
        :ets.delete(e, 1)
        Table.delete(t, 1)

        for k <- [1, 999, :nope, 1.0] do
          assert outcome(fn -> Table.next(t, k) end) |> elem(0) ==
                   outcome(fn -> :ets.next(e, k) end) |> elem(0),
                 "#{type} #{inspect(k)}"
        end
      end
    end

    test "keys cleared by delete_all_objects/1 stay places while fixed" do
      for type <- @types do
        {e, t} = both(type, objects(500, type))
        :ets.safe_fixtable(e, true)
        Table.safe_fixtable(t, true)
        k = Table.first(t)
        true = :ets.delete_all_objects(e)
        true = Table.delete_all_objects(t)

        assert {:ok, _} = outcome(fn -> Table.next(t, k) end)
        assert {:ok, _} = outcome(fn -> :ets.next(e, k) end)
        assert Table.info(t, :size) == 0

        Table.safe_fixtable(t, false)
        :ets.safe_fixtable(e, false)

        assert outcome(fn -> Table.next(t, k) end) |> elem(0) ==
                 outcome(fn -> :ets.next(e, k) end) |> elem(0)
      end
    end

    test "a fixed walk meets every key that stays once while inserts fill the table, as in ETS" do
      # Ten new keys per step for the first 3000 steps: the table grows to
      # ten times its size during the walk. A growing hash table moves its
      # objects; a fixed one must not let the walk meet one twice or miss
      # one.
      for type <- @hash_types do
        {e, t} = both(type, objects(3000, type))

        for {mod, tab} <- [{:ets, e}, {Table, t}] do
          mod.safe_fixtable(tab, true)
          counter = :counters.new(1, [])

          visited =
            walk(mod, tab, fn k ->
              :counters.add(counter, 1, 1)
              n = :counters.get(counter, 1)
              if is_integer(k) and rem(k, 4) == 0, do: mod.delete(tab, k)

              if n <= 3000,
                do: mod.insert(tab, for(j <- 1..10, do: {{:new, n, j}, :x}))
            end)

          what = "#{type} #{mod}"
          assert length(visited) == length(Enum.uniq(visited)), what
          assert MapSet.subset?(MapSet.new(1..3000), MapSet.new(visited)), what
          mod.safe_fixtable(tab, false)
          assert length(:lists.usort(mod.tab2list(tab))) == mod.info(tab, :size), what
        end

        # Unfixed, the table settles: every object once, as ETS holds them.
        assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
        Table.insert(t, for(i <- 1..5000, do: {{:more, i}, i}))
        :ets.insert(e, for(i <- 1..5000, do: {{:more, i}, i}))
        assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
        keys = walk(Table, t, fn _ -> :ok end)
        assert length(keys) == length(Enum.uniq(keys))
        assert length(keys) == length(Enum.uniq(walk(:ets, e, fn _ -> :ok end)))
      end
    end

    test "inserts and deletes by other processes during a fixed walk" do
      # Deletes of keys ahead and inserts of new keys while one process
      # walks: no step raises, no key is visited twice, every key that was
      # there throughout is visited, also when the inserts make the table
      # grow many times over.
      for type <- @hash_types do
        t = Table.new(:fix_busy, [type, :public])
        Table.insert(t, objects(4000, type))
        Table.safe_fixtable(t, true)
        # Keys 1..2000 are deleted by another process meanwhile, keys
        # 2001..4000 stay; 40,000 new ones come.
        other =
          Task.async(fn ->
            for i <- 1..2000 do
              Table.delete(t, i)
              Table.insert(t, for(j <- 1..20, do: {{:new, i, j}, :new}))
            end
          end)

        visited = walk(Table, t, fn _ -> :ok end)
        Task.await(other)
        assert length(visited) == length(Enum.uniq(visited))
        assert MapSet.subset?(MapSet.new(2001..4000), MapSet.new(visited))
        Table.safe_fixtable(t, false)
      end
    end
  end

  describe "scans fix big tables while they walk them" do
    test "select_delete/2 and match_delete/2 remove every match of a big table, as ETS" do
      # Deleting while walking shrank the shards under the walk: objects
      # after a shrunk shard's saved position were missed (256000 of 300000
      # deleted). A walk of more than one chunk now fixes the table.
      for type <- @hash_types do
        objs = for i <- 1..150_000, do: {i, rem(i, 2)}
        {e, t} = both(type, objs)
        ms = [{{:_, :_}, [], [true]}]
        assert Table.select_delete(t, ms) == :ets.select_delete(e, ms)
        assert Table.info(t, :size) == 0
        assert Table.info(t, :fixed) == false

        Table.insert(t, objs)
        :ets.insert(e, objs)
        assert Table.match_delete(t, {:_, 1}) == :ets.match_delete(e, {:_, 1})
        assert Table.info(t, :size) == :ets.info(e, :size)
        Table.delete(t)
        :ets.delete(e)
      end
    end

    test "a scan meets every object that stays while another process deletes the rest" do
      for type <- @hash_types do
        t = Table.new(:fix_scan, [type, :public])
        Table.insert(t, for(i <- 1..100_000, do: {i, i}))
        # 90 % go: the shards would shrink (at 1/8 full) under the walks.
        deleter = Task.async(fn -> for i <- 1..90_000, do: Table.delete(t, i) end)
        staying = [{{:"$1", :_}, [{:>, :"$1", 90_000}], [true]}]
        n = Table.select_count(t, staying)
        folded = Table.foldl(fn {k, _}, n -> if k > 90_000, do: n + 1, else: n end, 0, t)
        Task.await(deleter, 30_000)
        assert n == 10_000
        assert folded == 10_000
        Table.delete(t)
      end
    end

    test "tab2list and scans of few big objects fix the table too; a rename mid-scan unfixes it" do
      # 300 objects of 20 KB: more than one 4 MiB chunk, fewer than 2000.
      big = Table.new(:fix_bytes, [:public, :named_table])
      blob = :binary.copy(<<7>>, 20_000)
      Table.insert(big, for(i <- 1..300, do: {i, blob}))

      fixed_during = Table.foldl(fn _, acc -> acc and Table.info(big, :fixed) end, true, big)

      assert fixed_during
      assert length(Table.tab2list(big)) == 300
      assert Table.info(big, :fixed) == false

      # Renamed by the fold's fun: the fold goes on (its walk holds the
      # table's id; ETS's foldl, which steps with next/2 on the name, raises)
      # and the fixation, taken on the id, ends with it.
      n =
        Table.foldl(
          fn _, n ->
            if n == 0, do: Table.rename(:fix_bytes, :fix_bytes2)
            n + 1
          end,
          0,
          :fix_bytes
        )

      assert n == 300
      assert Table.info(:fix_bytes2, :fixed) == false
    end

    test "folds fix a big table (not a one-chunk one) and let it go, also when fun raises" do
      big = Table.new(:fix_fold, [:public])
      Table.insert(big, for(i <- 1..5000, do: {i}))
      small = Table.new(:fix_fold_small, [:public])
      Table.insert(small, {1})

      assert Table.foldl(fn _, acc -> [Table.info(big, :fixed) | acc] end, [], big)
             |> Enum.all?()

      assert Table.foldl(fn _, _ -> Table.info(small, :fixed) end, nil, small) == false

      assert_raise RuntimeError, fn -> Table.foldr(fn _, _ -> raise "boom" end, 0, big) end
      assert Table.info(big, :fixed) == false
    end
  end

  describe "fixations" do
    # The fixation items with the pid lists sorted (ETS lists them in an
    # internal order) and the times replaced by whether they are set.
    defp fix_info(mod, tab) do
      norm = fn
        false -> false
        :undefined -> :undefined
        {_since, procs} -> {:since, Enum.sort(procs)}
      end

      {mod.info(tab, :fixed), norm.(mod.info(tab, :safe_fixed)),
       norm.(mod.info(tab, :safe_fixed_monotonic_time))}
    end

    @tag :capture_log
    test "are counted per process and end with it, as in ETS" do
      for type <- @types do
        {e, t} = both(type, [{1, :a}])
        me = self()

        # Each helper fixes both tables `n` times, then obeys orders.
        helpers =
          for n <- [1, 2, 3] do
            spawn(fn ->
              for _ <- 1..n, do: {:ets.safe_fixtable(e, true), Table.safe_fixtable(t, true)}
              send(me, :fixed)

              receive do
                :release ->
                  for _ <- 1..n, do: {:ets.safe_fixtable(e, false), Table.safe_fixtable(t, false)}

                :crash ->
                  exit(:crash)
              end

              send(me, :released)
              receive do: (:exit -> :ok)
            end)
          end

        for _ <- helpers, do: assert_receive(:fixed)
        assert fix_info(Table, t) == fix_info(:ets, e)
        assert {true, {:since, [_, _, _]}, _} = fix_info(Table, t)

        for _ <- 1..2, do: {:ets.safe_fixtable(e, true), Table.safe_fixtable(t, true)}
        # Releasing more often than fixed is harmless.
        for _ <- 1..3, do: {:ets.safe_fixtable(e, false), Table.safe_fixtable(t, false)}
        assert fix_info(Table, t) == fix_info(:ets, e)

        [h1, h2, h3] = helpers
        send(h1, :release)
        assert_receive :released
        assert fix_info(Table, t) == fix_info(:ets, e)

        ref = Process.monitor(h2)
        send(h2, :crash)
        assert_receive {:DOWN, ^ref, _, _, _}

        ref = Process.monitor(h3)
        Process.exit(h3, :kill)
        assert_receive {:DOWN, ^ref, _, _, _}
        send(h1, :exit)
        # The down callbacks run asynchronously.
        wait_until(fn -> Table.info(t, :fixed) == false end)
        assert fix_info(Table, t) == fix_info(:ets, e)
        assert fix_info(Table, t) == {false, false, false}
      end
    end

    test "the times: since the table became fixed, in both forms" do
      t = Table.new(:fix_times, [:public])
      before = :erlang.monotonic_time()
      Table.safe_fixtable(t, true)
      {mono, [{pid, 1}]} = Table.info(t, :safe_fixed_monotonic_time)
      assert pid == self()
      assert mono >= before and mono <= :erlang.monotonic_time()
      # A second fixation keeps the time.
      Table.safe_fixtable(t, true)
      assert {^mono, [{_, 2}]} = Table.info(t, :safe_fixed_monotonic_time)
      {ts, [{_, 2}]} = Table.info(t, :safe_fixed)
      # ETS's timestamp is the monotonic time shifted by the time offset.
      us = :erlang.convert_time_unit(mono + :erlang.time_offset(), :native, :microsecond)

      assert ts ==
               {div(us, 1_000_000_000_000), rem(div(us, 1_000_000), 1_000_000),
                rem(us, 1_000_000)}

      e = :ets.new(:fix_times, [:public])
      :ets.safe_fixtable(e, true)
      {emono, _} = :ets.info(e, :safe_fixed_monotonic_time)
      {ets_ts, _} = :ets.info(e, :safe_fixed)
      eus = :erlang.convert_time_unit(emono + :erlang.time_offset(), :native, :microsecond)

      assert ets_ts ==
               {div(eus, 1_000_000_000_000), rem(div(eus, 1_000_000), 1_000_000),
                rem(eus, 1_000_000)}
    end

    test "survive give_away/3; errors as in ETS" do
      for type <- @types do
        {e, t} = both(type, [{1, :a}])
        :ets.safe_fixtable(e, true)
        Table.safe_fixtable(t, true)
        heir = spawn(fn -> receive do: (_ -> :ok) end)
        :ets.give_away(e, heir, nil)
        Table.give_away(t, heir, nil)
        assert fix_info(Table, t) == fix_info(:ets, e)
        send(heir, :bye)
      end

      private_e = :ets.new(:fix_priv, [:private])
      private_t = Table.new(:fix_priv, [:private])
      protected_e = :ets.new(:fix_prot, [:protected])
      protected_t = Table.new(:fix_prot, [:protected])
      deleted_e = :ets.new(:fix_del, [])
      deleted_t = Table.new(:fix_del, [])
      :ets.delete(deleted_e)
      Table.delete(deleted_t)

      for {te, tt, arg} <- [
            {protected_e, protected_t, :maybe},
            {protected_e, protected_t, nil},
            {protected_e, protected_t, 1},
            {deleted_e, deleted_t, true},
            {:no_such_table, :no_such_table, true},
            {{:not, :a, :table}, {:not, :a, :table}, true}
          ] do
        assert outcome(fn -> Table.safe_fixtable(tt, arg) end) ==
                 outcome(fn -> :ets.safe_fixtable(te, arg) end),
               inspect({te, arg})
      end

      # From another process: a private table is off limits, a protected
      # one may be fixed (reading suffices).
      for {te, tt} <- [{private_e, private_t}, {protected_e, protected_t}] do
        other =
          Task.async(fn ->
            {outcome(fn -> Table.safe_fixtable(tt, true) end),
             outcome(fn -> :ets.safe_fixtable(te, true) end)}
          end)

        {native, ets} = Task.await(other)
        assert native == ets
      end

      for {te, tt} <- [{deleted_e, deleted_t}, {:no_such_table, :no_such_table}],
          item <- [:fixed, :safe_fixed, :safe_fixed_monotonic_time] do
        assert Table.info(tt, item) == :ets.info(te, item)
      end
    end

    test "a table deleted while fixed, and its fixers' exits afterwards" do
      t = Table.new(:fix_deleted, [:public])
      Table.insert(t, for(i <- 1..1000, do: {i}))
      me = self()

      p =
        spawn(fn ->
          Table.safe_fixtable(t, true)
          send(me, :fixed)
          receive do: (_ -> :ok)
        end)

      assert_receive :fixed
      Table.safe_fixtable(t, true)
      Table.delete(t, 5)
      assert Table.delete(t)
      assert Table.info(t, :fixed) == :undefined
      assert_raise ArgumentError, fn -> Table.safe_fixtable(t, false) end
      Process.exit(p, :kill)
      Process.sleep(20)
      assert Table.info(t, :safe_fixed) == :undefined
    end
  end

  defp wait_until(fun, tries \\ 200) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("condition never became true")
      true -> Process.sleep(5) && wait_until(fun, tries - 1)
    end
  end
end
