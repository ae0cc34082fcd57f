defmodule NativeStore.TableApiTest do
  @moduledoc "Unit tests of each NativeStore.Table function, with their error cases."
  use ExUnit.Case, async: true

  import Bitwise
  alias NativeStore.Table

  defp uniq_name(tag), do: :"table_api_#{tag}_#{System.unique_integer([:positive])}"

  # Runs `fun` in a fresh process and returns its result (or the exception).
  defp in_other_process(fun) do
    task =
      Task.async(fn ->
        try do
          {:ok, fun.()}
        rescue
          e -> {:raised, e.__struct__}
        end
      end)

    Task.await(task)
  end

  defp deleted_table do
    t = Table.new(:deleted, [:public])
    true = Table.delete(t)
    t
  end

  describe "new/2" do
    test "returns a reference, or the name for named tables" do
      t = Table.new(:anon, [])
      assert is_reference(t)
      name = uniq_name(:named)
      assert Table.new(name, [:named_table, :public]) == name
      assert Table.whereis(name) |> is_reference()

      assert Table.info(name, :named_table) == true
      assert Table.info(t, :named_table) == false
    end

    test "defaults match :ets (protected, keypos 1, set, no heir)" do
      t = Table.new(:defaults, [])
      e = :ets.new(:defaults, [])

      for item <-
            [:protection, :keypos, :type, :heir, :named_table, :size, :owner, :node] ++
              [:fixed, :safe_fixed] do
        assert Table.info(t, item) == :ets.info(e, item), "info item #{item}"
      end
    end

    test "info :size and :memory follow writes; items of a deleted table are :undefined" do
      for type <- [:set, :ordered_set, :bag, :duplicate_bag] do
        t = Table.new(:sizes, [type, :public])
        empty = Table.info(t, :memory)
        Table.insert(t, for(k <- 1..500, do: {k, :binary.copy("x", 100)}))
        assert Table.info(t, :size) == 500
        assert Table.info(t, :memory) > empty + 500 * 100 / 8
        Table.delete(t, 1)
        Table.insert(t, {1_000, :y})
        Table.take(t, 2)
        assert Table.info(t, :size) == 499
        assert Table.info(t, :size) == length(Table.tab2list(t))
        Table.delete_all_objects(t)
        assert Table.info(t, :size) == 0
        assert Table.info(t, :memory) < empty + 100
        Table.delete(t)

        for item <- [:size, :memory, :fixed, :safe_fixed, :type] do
          assert Table.info(t, item) == :undefined
          # Not a table identifier at all: ArgumentError, as in ETS.
          assert_raise ArgumentError, fn -> Table.info(make_ref(), item) end
          assert_raise ArgumentError, fn -> :ets.info(make_ref(), item) end
        end

        assert_raise ArgumentError, fn -> Table.info(make_ref()) end
      end
    end

    test "accepts every ETS set option" do
      heir = spawn(fn -> Process.sleep(:infinity) end)

      t =
        Table.new(:all_opts, [
          :set,
          :public,
          {:keypos, 2},
          {:heir, heir, :data},
          {:read_concurrency, true},
          {:write_concurrency, true},
          {:decentralized_counters, true},
          :compressed
        ])

      assert Table.info(t, :keypos) == 2
      assert Table.info(t, :protection) == :public
      assert Table.info(t, :heir) == heir
      assert Table.info(t, :read_concurrency) == true
      assert Table.info(t, :write_concurrency) == true
      assert Table.info(t, :decentralized_counters) == true
      assert Table.info(t, :compressed) == true

      t2 = Table.new(:opts2, [{:heir, :none}, {:write_concurrency, :auto}, :private])
      assert Table.info(t2, :heir) == :none
      assert Table.info(t2, :protection) == :private
      Process.exit(heir, :kill)
    end

    test "later options win, as in :ets" do
      t = Table.new(:later, [:private, :public, {:keypos, 3}, {:keypos, 2}])
      e = :ets.new(:later, [:private, :public, {:keypos, 3}, {:keypos, 2}])
      assert Table.info(t, :protection) == :ets.info(e, :protection)
      assert Table.info(t, :keypos) == :ets.info(e, :keypos)
    end

    test "every ETS table type is accepted and reported by info/2" do
      for type <- [:set, :ordered_set, :bag, :duplicate_bag] do
        t = Table.new(:typed, [type])
        e = :ets.new(:typed, [type])
        assert Table.info(t, :type) == :ets.info(e, :type)
      end

      t = Table.new(:typed, [:bag, :ordered_set])
      assert Table.info(t, :type) == :ordered_set
    end

    test "wrong option types raise ArgumentError, like :ets" do
      bad_opts = [
        [{:keypos, 0}],
        [{:keypos, -1}],
        [{:keypos, :a}],
        [{:keypos, 1.0}],
        [{:heir, :not_a_pid, :data}],
        [{:heir, self()}],
        [{:read_concurrency, :yes}],
        [{:write_concurrency, 1}],
        [{:decentralized_counters, nil}],
        [:unknown_option],
        [{:unknown, 1}],
        [:public | :improper],
        :public,
        %{}
      ]

      for opts <- bad_opts do
        assert_raise ArgumentError, fn -> :ets.new(:bad, opts) end
        assert_raise ArgumentError, fn -> Table.new(:bad, opts) end
      end

      for name <- ["string", 1, {:a}] do
        assert_raise ArgumentError, fn -> Table.new(name, []) end
      end
    end

    test "a name already taken raises ArgumentError; the name is free after delete" do
      name = uniq_name(:taken)
      Table.new(name, [:named_table])
      assert_raise ArgumentError, fn -> Table.new(name, [:named_table]) end
      # Unnamed tables may share a name.
      t1 = Table.new(name, [])
      t2 = Table.new(name, [])
      assert t1 != t2
      assert Table.info(t1, :name) == name
      Table.delete(name)
      assert Table.new(name, [:named_table]) == name
    end

    test "named tables of NativeStore and :ets do not share a namespace" do
      name = uniq_name(:both)
      :ets.new(name, [:named_table])
      assert Table.new(name, [:named_table]) == name
      :ets.delete(name)
    end
  end

  describe "insert/2 and insert_new/2" do
    setup do
      {:ok, t: Table.new(:ins, [:public])}
    end

    test "insert replaces, insert_new does not", %{t: t} do
      assert Table.insert(t, {:a, 1})
      assert Table.insert(t, {:a, 2, 3})
      assert Table.lookup(t, :a) == [{:a, 2, 3}]
      refute Table.insert_new(t, {:a, 9})
      assert Table.insert_new(t, {:b, 9})
      assert Table.lookup(t, :a) == [{:a, 2, 3}]
    end

    test "lists: all or nothing for insert_new", %{t: t} do
      assert Table.insert(t, [{:a, 1}, {:b, 2}, {:a, 3}])
      assert Table.lookup(t, :a) == [{:a, 3}]
      refute Table.insert_new(t, [{:c, 1}, {:a, 0}])
      assert Table.lookup(t, :c) == []
      assert Table.insert_new(t, [{:c, 1}, {:d, 2}])
      assert Table.insert(t, [])
      assert Table.insert_new(t, [])
      assert Table.info(t, :size) == 4
    end

    test "bad objects raise and insert nothing", %{t: t} do
      for bad <- [:a, {}, [{:ok, 1}, :not_a_tuple], [{}], "bin", 1] do
        assert_raise ArgumentError, fn -> Table.insert(t, bad) end
        assert_raise ArgumentError, fn -> Table.insert_new(t, bad) end
      end

      assert Table.tab2list(t) == []
      t2 = Table.new(:kp3, [:public, {:keypos, 3}])
      assert_raise ArgumentError, fn -> Table.insert(t2, {1, 2}) end
      assert Table.insert(t2, {1, 2, 3})
      assert Table.lookup(t2, 3) == [{1, 2, 3}]
    end

    test "keys are matched exactly, except 0.0 and -0.0 (as ETS on OTP 25)", %{t: t} do
      Table.insert(t, [{1, :int}, {1.0, :float}])
      assert Table.lookup(t, 1) == [{1, :int}]
      assert Table.lookup(t, 1.0) == [{1.0, :float}]
      Table.insert(t, {-0.0, :neg})
      e = :ets.new(:zero, [])
      :ets.insert(e, {-0.0, :neg})
      assert Table.lookup(t, 0.0) == :ets.lookup(e, 0.0)
      assert Table.member(t, 0.0) == :ets.member(e, 0.0)
      Table.insert(t, {0.0, :pos})
      :ets.insert(e, {0.0, :pos})
      assert Table.lookup(t, -0.0) == :ets.lookup(e, -0.0)
      assert Table.info(t, :size) == 3
    end

    test "sub-binaries, big binaries, bitstrings and bignums as keys", %{t: t} do
      big = :binary.copy(String.duplicate("xyz", 1000))
      sub = binary_part(big, 7, 200)
      Table.insert(t, {sub, :sub})
      assert Table.lookup(t, :binary.copy(sub)) == [{sub, :sub}]
      Table.insert(t, {<<1::3>>, :bits})
      assert Table.lookup(t, <<1::3>>) == [{<<1::3>>, :bits}]
      assert Table.lookup(t, <<1::4>>) == []
      Table.insert(t, {1 <<< 100, :big})
      assert Table.lookup(t, 1 <<< 100) == [{1 <<< 100, :big}]
      Table.insert(t, {big, big})
      assert Table.lookup_element(t, big, 2) == big
    end

    test "writing needs a live table", %{t: t} do
      d = deleted_table()
      assert_raise ArgumentError, fn -> Table.insert(d, {:a}) end
      assert_raise ArgumentError, fn -> Table.insert_new(d, {:a}) end
      assert_raise ArgumentError, fn -> Table.insert(:no_such_table, {:a}) end
      assert_raise ArgumentError, fn -> Table.insert(make_ref(), {:a}) end
      assert_raise ArgumentError, fn -> Table.insert("table", {:a}) end
      assert_raise ArgumentError, fn -> Table.insert(self(), {:a}) end
      # An :ets table id is not a NativeStore table.
      assert_raise ArgumentError, fn -> Table.insert(:ets.new(:e, [:public]), {:a}) end
      assert Table.insert(t, {:a})
    end
  end

  describe "lookup/2, member/2, lookup_element/3,4" do
    setup do
      t = Table.new(:look, [:public])
      Table.insert(t, {:k, :v1, :v2})
      {:ok, t: t}
    end

    test "found and missing", %{t: t} do
      assert Table.lookup(t, :k) == [{:k, :v1, :v2}]
      assert Table.lookup(t, :nope) == []
      assert Table.member(t, :k)
      refute Table.member(t, :nope)
      assert Table.lookup_element(t, :k, 1) == :k
      assert Table.lookup_element(t, :k, 3) == :v2
      assert Table.lookup_element(t, :k, 2, :default) == :v1
      assert Table.lookup_element(t, :nope, 2, :default) == :default
    end

    test "lookup_element errors", %{t: t} do
      for {key, pos} <- [{:nope, 2}, {:k, 0}, {:k, 4}, {:k, -1}, {:k, 1 <<< 80}, {:k, :a}] do
        assert_raise ArgumentError, fn -> Table.lookup_element(t, key, pos) end
      end

      assert_raise ArgumentError, fn -> Table.lookup_element(t, :k, 9, :default) end
    end

    test "reads of a deleted table or non-table raise" do
      d = deleted_table()

      for tab <- [d, :no_such_table, make_ref(), "x", 1] do
        assert_raise ArgumentError, fn -> Table.lookup(tab, :k) end
        assert_raise ArgumentError, fn -> Table.member(tab, :k) end
        assert_raise ArgumentError, fn -> Table.lookup_element(tab, :k, 1) end
        assert_raise ArgumentError, fn -> Table.tab2list(tab) end
      end
    end
  end

  describe "take/2, delete/2, delete_object/2, delete_all_objects/1, delete/1" do
    setup do
      t = Table.new(:del, [:public])
      Table.insert(t, [{:a, 1}, {:b, 2}, {:c, 3.0}])
      {:ok, t: t}
    end

    test "take", %{t: t} do
      assert Table.take(t, :a) == [{:a, 1}]
      assert Table.take(t, :a) == []
      assert Table.info(t, :size) == 2
    end

    test "delete/2", %{t: t} do
      assert Table.delete(t, :a)
      assert Table.delete(t, :a)
      assert Table.lookup(t, :a) == []
    end

    test "delete_object only deletes an identical object", %{t: t} do
      assert Table.delete_object(t, {:a, 1.0})
      assert Table.lookup(t, :a) == [{:a, 1}]
      assert Table.delete_object(t, {:a, 1, 2})
      assert Table.lookup(t, :a) == [{:a, 1}]
      assert Table.delete_object(t, {:a, 1})
      assert Table.lookup(t, :a) == []
      assert Table.delete_object(t, {:c, 3})
      assert Table.member(t, :c)
      assert_raise ArgumentError, fn -> Table.delete_object(t, :not_a_tuple) end
      assert_raise ArgumentError, fn -> Table.delete_object(t, {}) end
    end

    test "delete_all_objects", %{t: t} do
      assert Table.delete_all_objects(t)
      assert Table.tab2list(t) == []
      assert Table.info(t, :size) == 0
      assert Table.insert(t, {:again})
      assert Table.lookup(t, :again) == [{:again}]
    end

    test "delete_all_objects of every size and type frees what it took (in place, waited, background)" do
      alias NativeStore.Nif

      # In place up to 1,000 objects (a bag: keys), a handle for the dirty
      # free up to 100,000, the background thread past that.
      for type <- [:set, :ordered_set, :bag, :duplicate_bag],
          {n, path} <- [{10, true}, {5_000, :handle}, {150_000, true}] do
        t = Table.new(:dao_sizes, [type, :public])
        Table.insert(t, for(i <- 1..n, do: {i, i}))
        taken = Nif.table_delete_all_objects(t)

        assert if(path == :handle, do: is_reference(taken), else: taken == true),
               inspect({type, n})

        if path == :handle, do: assert(Nif.table_free_taken(taken) == true)
        assert Table.info(t, :size) == 0
        Table.insert(t, for(i <- 1..n, do: {i, i}))
        assert Table.delete_all_objects(t)
        assert Table.info(t, :size) == 0
        assert Table.tab2list(t) == []
        Table.insert(t, {1, :again})
        assert Table.lookup(t, 1) == [{1, :again}]
        Table.delete(t)
      end

      # The handle of contents to free: freed once, by whoever calls first;
      # dropped without a call, the contents go to the background thread.
      t = Table.new(:dao_handle, [:public])
      Table.insert(t, for(i <- 1..5_000, do: {i, i}))
      taken = Nif.table_delete_all_objects(t)
      assert Table.info(t, :size) == 0
      assert Nif.table_free_taken(taken) == true
      assert Nif.table_free_taken(taken) == true
      Table.insert(t, for(i <- 1..5_000, do: {i, i}))

      spawn(fn -> Nif.table_delete_all_objects(t) end)
      |> Process.monitor()
      |> then(fn ref -> assert_receive {:DOWN, ^ref, _, _, :normal} end)

      assert Table.info(t, :size) == 0
      assert_raise ArgumentError, fn -> Nif.table_free_taken(:not_a_handle) end
      assert_raise ArgumentError, fn -> Nif.table_free_taken(t) end

      # A fixed hash table keeps what it took for its walks (nothing to free
      # yet); a fixed walk goes on to the end.
      Table.insert(t, for(i <- 1..5_000, do: {i, i}))
      Table.safe_fixtable(t, true)
      k = Table.first(t)
      assert Nif.table_delete_all_objects(t) == true
      assert Table.next(t, k) == :"$end_of_table"
      Table.safe_fixtable(t, false)
      assert Table.info(t, :size) == 0
      Table.delete(t)
    end

    test "delete/1 and then everything raises; info is :undefined", %{t: t} do
      assert Table.delete(t)
      assert Table.info(t) == :undefined
      assert Table.info(t, :size) == :undefined
      assert_raise ArgumentError, fn -> Table.delete(t) end
      assert_raise ArgumentError, fn -> Table.delete(t, :a) end
      assert_raise ArgumentError, fn -> Table.take(t, :a) end
      assert_raise ArgumentError, fn -> Table.delete_object(t, {:a, 1}) end
      assert_raise ArgumentError, fn -> Table.delete_all_objects(t) end
      assert_raise ArgumentError, fn -> Table.update_counter(t, :a, 1) end
      assert_raise ArgumentError, fn -> Table.update_counter(t, :a, 1, {:a, 0}) end
      assert_raise ArgumentError, fn -> Table.update_element(t, :a, {2, 0}) end
      assert_raise ArgumentError, fn -> Table.replace(t, :a, [], [{:a, 1}]) end
      assert_raise ArgumentError, fn -> Table.merge_map(t, :a, %{}) end
      refute t in Table.all()
    end

    test "delete of a named table frees the name" do
      name = uniq_name(:delname)
      Table.new(name, [:named_table])
      assert Table.delete(name)
      assert Table.whereis(name) == :undefined
      assert Table.info(name) == :undefined
      assert_raise ArgumentError, fn -> Table.lookup(name, :a) end
    end
  end

  describe "update_counter/3,4" do
    setup do
      t = Table.new(:ctr, [:public])
      Table.insert(t, {:c, 10, 20, :x})
      {:ok, t: t}
    end

    test "all op forms", %{t: t} do
      assert Table.update_counter(t, :c, 1) == 11
      assert Table.update_counter(t, :c, {3, -5}) == 15
      assert Table.update_counter(t, :c, {2, 10, 15, 0}) == 0
      assert Table.update_counter(t, :c, {2, -1, -1, 100}) == -1
      assert Table.update_counter(t, :c, {2, -1, -1, 100}) == 100
      assert Table.update_counter(t, :c, [{2, 1}, {3, 1}, {2, 1}]) == [101, 16, 102]
      assert Table.update_counter(t, :c, []) == []
      assert Table.lookup(t, :c) == [{:c, 102, 16, :x}]
    end

    test "default object", %{t: t} do
      assert Table.update_counter(t, :new, {2, 5}, {:ignored, 100}) == 105
      assert Table.lookup(t, :new) == [{:new, 105}]
      assert Table.update_counter(t, :new, {2, 5}, {:ignored, 100}) == 110
      assert_raise ArgumentError, fn -> Table.update_counter(t, :none, 1, :bad) end
      assert_raise ArgumentError, fn -> Table.update_counter(t, :none, {3, 1}, {:x, 1}) end
      assert Table.lookup(t, :none) == []
    end

    test "errors leave the object unchanged", %{t: t} do
      bad = [
        {:nope, 1},
        {:c, {1, 1}},
        {:c, {4, 1}},
        {:c, {5, 1}},
        {:c, {0, 1}},
        {:c, [{2, 1}, {4, 1}]},
        {:c, 1.0},
        {:c, {2, :a}},
        {:c, {2}},
        {:c, {2, 1, 2}},
        {:c, :a}
      ]

      for {key, op} <- bad do
        assert_raise ArgumentError, fn -> Table.update_counter(t, key, op) end
      end

      assert Table.lookup(t, :c) == [{:c, 10, 20, :x}]
    end

    test "counters grow past 64 bits", %{t: t} do
      max = (1 <<< 63) - 1
      Table.insert(t, {:big, max})
      assert Table.update_counter(t, :big, 1) == max + 1
      assert Table.update_counter(t, :big, max) == 2 * max + 1
      assert Table.update_counter(t, :big, -max) == max + 1
      assert Table.update_counter(t, :big, -max) == 1
      Table.insert(t, {:neg, -(1 <<< 63)})
      assert Table.update_counter(t, :neg, -1) == -(1 <<< 63) - 1
      assert Table.lookup(t, :neg) == [{:neg, -(1 <<< 63) - 1}]
    end

    test "bignum increments as :ets, up to the documented 127 bits", %{t: t} do
      e = :ets.new(:ctr_big, [:public])

      Table.insert(t, {:c, 0})
      :ets.insert(e, {:c, 0})

      for op <- [1 <<< 70, {2, -(1 <<< 100)}, {2, 1, 1 <<< 65, -(1 <<< 66)}, [{2, 1 <<< 90}]] do
        assert Table.update_counter(t, :c, op) == :ets.update_counter(e, :c, op)
      end

      assert Table.lookup(t, :c) == :ets.lookup(e, :c)
      # Past 127 bits NativeStore raises (documented; :ets accepts these).
      assert_raise ArgumentError, fn -> Table.update_counter(t, :c, 1 <<< 130) end
      Table.insert(t, {:huge, 1 <<< 130})
      assert_raise ArgumentError, fn -> Table.update_counter(t, :huge, 1) end
    end

    test "keypos 2", _ do
      t = Table.new(:ctr2, [:public, {:keypos, 2}])
      Table.insert(t, {5, :k, 7})
      assert Table.update_counter(t, :k, 1) == 8
      assert Table.update_counter(t, :k, {1, 1}) == 6
      assert_raise ArgumentError, fn -> Table.update_counter(t, :k, {2, 1}) end
      assert Table.update_counter(t, :d, {1, 2}, {0, :whatever, 0}) == 2
      assert Table.lookup(t, :d) == [{2, :d, 0}]
    end
  end

  describe "update_element/3" do
    setup do
      t = Table.new(:upd, [:public])
      Table.insert(t, {:k, 1, 2})
      {:ok, t: t}
    end

    test "single and list", %{t: t} do
      assert Table.update_element(t, :k, {2, :a})
      assert Table.update_element(t, :k, [{3, :b}, {2, :c}, {3, :d}])
      assert Table.lookup(t, :k) == [{:k, :c, :d}]
      assert Table.update_element(t, :k, [])
      refute Table.update_element(t, :missing, {2, :a})
    end

    test "bad positions on an existing key raise and change nothing", %{t: t} do
      for spec <- [{1, :a}, {4, :a}, {0, :a}, [{2, :ok}, {9, :a}], {2}, :a, {2.0, :a}] do
        assert_raise ArgumentError, fn -> Table.update_element(t, :k, spec) end
      end

      assert Table.lookup(t, :k) == [{:k, 1, 2}]
    end
  end

  describe "tab2list/1 and info/1,2" do
    test "tab2list" do
      t = Table.new(:t2l, [])
      assert Table.tab2list(t) == []
      objs = for i <- 1..5000, do: {i, Integer.to_string(i)}
      Table.insert(t, objs)
      assert Enum.sort(Table.tab2list(t)) == objs
    end

    test "info/1 has :ets's items, in :ets's order" do
      t = Table.new(:inf, [])
      e = :ets.new(:inf, [])
      assert Keyword.keys(Table.info(t)) == Keyword.keys(:ets.info(e))
      assert Table.info(t, :id) == t
      assert Table.info(t, :owner) == self()
      assert Table.info(t, :node) == node()
      assert Table.info(t, :type) == :set
      mem0 = Table.info(t, :memory)
      assert is_integer(mem0) and mem0 > 0
      Table.insert(t, for(i <- 1..1000, do: {i, :binary.copy("v", 100)}))
      assert Table.info(t, :memory) > mem0
      assert Table.info(t, :size) == 1000
      assert_raise ArgumentError, fn -> Table.info(t, :bogus) end
      # A reference that is no table is an error in ETS (a deleted table's
      # is :undefined).
      assert_raise ArgumentError, fn -> :ets.info(make_ref()) end
      assert_raise ArgumentError, fn -> Table.info(make_ref()) end
      assert Table.info(:no_such_table) == :undefined
      assert Table.info(:no_such_table, :size) == :undefined
      assert_raise ArgumentError, fn -> Table.info("x") end
      assert_raise ArgumentError, fn -> Table.info(1) end
    end
  end

  describe "whereis/1 and all/0" do
    test "whereis" do
      name = uniq_name(:where)
      assert Table.whereis(name) == :undefined
      Table.new(name, [:named_table])
      ref = Table.whereis(name)
      assert is_reference(ref)
      Table.insert(name, {:a, 1})
      assert Table.lookup(ref, :a) == [{:a, 1}]
      assert Table.info(ref, :name) == name
      # Not an atom: ArgumentError, as :ets.whereis/1 raises.
      for bad <- [make_ref(), 1, "str"] do
        assert_raise ArgumentError, fn -> :ets.whereis(bad) end
        assert_raise ArgumentError, fn -> Table.whereis(bad) end
      end
    end

    test "all lists live tables, names for named ones" do
      name = uniq_name(:all)
      Table.new(name, [:named_table])
      t = Table.new(:all_anon, [])
      all = Table.all()
      assert name in all
      assert t in all
      Table.delete(t)
      refute t in Table.all()
    end
  end

  describe "replace/4 and merge_map/3" do
    setup do
      {:ok, t: Table.new(:ext, [:public])}
    end

    test "replace is a compare-and-swap", %{t: t} do
      assert Table.replace(t, :k, [], [{:k, 1}])
      refute Table.replace(t, :k, [], [{:k, 2}])
      refute Table.replace(t, :k, [{:k, 1.0}], [{:k, 2}])
      assert Table.replace(t, :k, [{:k, 1}], [{:k, 2}])
      assert Table.replace(t, :k, [{:k, 2}], [])
      assert Table.lookup(t, :k) == []
      assert_raise ArgumentError, fn -> Table.replace(t, :k, [], [{:other, 1}]) end
      assert_raise ArgumentError, fn -> Table.replace(t, :k, [{:k, 1}, {:k, 2}], []) end
      assert_raise ArgumentError, fn -> Table.replace(t, :k, [:x], []) end
      assert_raise FunctionClauseError, fn -> Table.replace(t, :k, :x, []) end
    end

    test "merge_map", %{t: t} do
      assert Table.merge_map(t, :m, %{a: 1}) == %{a: 1}
      assert Table.merge_map(t, :m, %{b: 2, a: 0}) == %{a: 0, b: 2}
      assert Table.lookup(t, :m) == [{:m, %{a: 0, b: 2}}]
      big = Map.new(1..100, &{&1, &1})
      assert Table.merge_map(t, :m, big) == Map.merge(%{a: 0, b: 2}, big)
      Table.insert(t, {:not_map, 1})
      assert_raise ArgumentError, fn -> Table.merge_map(t, :not_map, %{a: 1}) end
      assert_raise ArgumentError, fn -> Table.merge_map(t, :m, a: 1) end
    end
  end

  describe "access rights from other processes" do
    test "private: other processes can neither read nor write" do
      t = Table.new(:priv, [:private])
      Table.insert(t, {:a, 1})

      for f <- [
            fn -> Table.lookup(t, :a) end,
            fn -> Table.member(t, :a) end,
            fn -> Table.lookup_element(t, :a, 2) end,
            fn -> Table.tab2list(t) end,
            fn -> Table.insert(t, {:b, 1}) end,
            fn -> Table.delete(t, :a) end,
            fn -> Table.take(t, :a) end,
            fn -> Table.update_counter(t, :a, 1) end,
            fn -> Table.delete(t) end
          ] do
        assert in_other_process(f) == {:raised, ArgumentError}
      end

      # info is allowed for everyone, as in :ets.
      assert {:ok, info} = in_other_process(fn -> Table.info(t) end)
      assert info[:size] == 1
      assert Table.lookup(t, :a) == [{:a, 1}]
    end

    test "protected: others read, only the owner writes" do
      t = Table.new(:prot, [:protected])
      Table.insert(t, {:a, 1})
      assert in_other_process(fn -> Table.lookup(t, :a) end) == {:ok, [{:a, 1}]}
      assert in_other_process(fn -> Table.member(t, :a) end) == {:ok, true}
      assert in_other_process(fn -> Table.lookup_element(t, :a, 2) end) == {:ok, 1}
      assert in_other_process(fn -> Table.tab2list(t) end) == {:ok, [{:a, 1}]}

      for f <- [
            fn -> Table.insert(t, {:b, 1}) end,
            fn -> Table.insert_new(t, {:b, 1}) end,
            fn -> Table.delete(t, :a) end,
            fn -> Table.delete_object(t, {:a, 1}) end,
            fn -> Table.delete_all_objects(t) end,
            fn -> Table.take(t, :a) end,
            fn -> Table.update_counter(t, :a, 1) end,
            fn -> Table.update_element(t, :a, {2, 0}) end,
            fn -> Table.replace(t, :a, [{:a, 1}], []) end,
            fn -> Table.merge_map(t, :m, %{}) end,
            fn -> Table.delete(t) end
          ] do
        assert in_other_process(f) == {:raised, ArgumentError}
      end

      assert Table.lookup(t, :a) == [{:a, 1}]
    end

    test "protected tab2list of a big table from another process" do
      t = Table.new(:prot_big, [:protected])
      Table.insert(t, for(i <- 1..10_000, do: {i}))
      assert {:ok, list} = in_other_process(fn -> Table.tab2list(t) end)
      assert length(list) == 10_000
    end

    test "public: everyone reads, writes and may delete the table" do
      t = Table.new(:pub, [:public])
      assert in_other_process(fn -> Table.insert(t, {:a, 1}) end) == {:ok, true}
      assert Table.lookup(t, :a) == [{:a, 1}]
      # As in :ets, any process may delete a public table.
      e = :ets.new(:pub, [:public])
      assert in_other_process(fn -> :ets.delete(e) end) == {:ok, true}
      assert in_other_process(fn -> Table.delete(t) end) == {:ok, true}
      assert Table.info(t) == :undefined
    end

    test "named private table, from another process" do
      name = uniq_name(:privnamed)
      Table.new(name, [:named_table, :private])
      assert in_other_process(fn -> Table.lookup(name, :a) end) == {:raised, ArgumentError}
      assert in_other_process(fn -> Table.whereis(name) end) |> elem(1) |> is_reference()
    end
  end

  describe "bad table arguments" do
    test "every function agrees with :ets on tables that are not there" do
      t = Table.new(:sweep, [:public])
      Table.delete(t)
      e = :ets.new(:sweep, [:public])
      :ets.delete(e)
      ref = make_ref()

      bad = [
        {ref, ref},
        {123, 123},
        {"x", "x"},
        {:no_such_sweep_table, :no_such_sweep_table},
        {e, t}
      ]

      all = [{:_, [], [true]}]

      calls = [
        lookup: [1],
        insert: [{1, 2}],
        insert_new: [{1, 2}],
        member: [1],
        take: [1],
        delete: [],
        delete: [1],
        delete_object: [{1, 2}],
        delete_all_objects: [],
        update_counter: [1, 1],
        update_counter: [1, 1, {1, 0}],
        update_element: [1, {2, 3}],
        lookup_element: [1, 2],
        tab2list: [],
        first: [],
        last: [],
        next: [1],
        prev: [1],
        select: [all],
        select: [all, 1],
        select_count: [all],
        select_delete: [all],
        select_replace: [[{{1, :"$1"}, [], [{{1, :"$1"}}]}]],
        select_reverse: [all],
        match: [{:"$1", :_}],
        match_object: [{:_, :_}],
        match_delete: [{:_, :_}],
        info: [],
        info: [:size],
        info: [:type],
        give_away: [self(), :gift],
        setopts: [[{:heir, :none}]],
        rename: [:sweep_new_name]
      ]

      outcome = &NativeStore.Test.Differential.outcome/1

      for {eb, nb} <- bad, {fun, args} <- calls do
        expected = outcome.(fn -> apply(:ets, fun, [eb | args]) end)
        actual = outcome.(fn -> apply(Table, fun, [nb | args]) end)

        assert actual == expected,
               "#{fun}(#{inspect(nb)}, ...): #{inspect(actual)}, :ets #{inspect(expected)}"
      end

      for {eb, nb} <- bad, fun <- [:foldl, :foldr] do
        acc = fn _, a -> a end

        assert outcome.(fn -> apply(Table, fun, [acc, 0, nb]) end) ==
                 outcome.(fn -> apply(:ets, fun, [acc, 0, eb]) end)
      end
    end
  end

  describe "rename/2" do
    test "named and unnamed tables, taken names, old names: as :ets" do
      outcome = fn f ->
        try do
          case f.() do
            r when is_reference(r) -> {:ok, :ref}
            other -> {:ok, other}
          end
        rescue
          e -> {:raise, e.__struct__}
        end
      end

      run = fn mod ->
        mod.new(:rn_a, [:named_table, :public])
        mod.new(:rn_b, [:named_table, :public])
        u = mod.new(:rn_u, [:public])

        results = [
          outcome.(fn -> mod.rename(:rn_a, :rn_b) end),
          outcome.(fn -> mod.rename(:rn_a, :rn_a) end),
          outcome.(fn -> mod.rename(u, :rn_u2) end),
          outcome.(fn -> mod.rename(u, :rn_a) end),
          outcome.(fn -> mod.rename(:rn_a, :rn_c) end),
          outcome.(fn -> mod.insert(:rn_a, {1}) end),
          outcome.(fn -> mod.insert(:rn_c, {1}) end),
          outcome.(fn -> mod.info(:rn_c, :name) end),
          outcome.(fn -> mod.info(u, :name) end),
          outcome.(fn -> mod.new(:rn_a, [:named_table]) end),
          outcome.(fn -> mod.new(:rn_c, [:named_table]) end),
          outcome.(fn -> mod.rename(:rn_c, "str") end),
          outcome.(fn -> mod.rename(:no_such_rn, :rn_d) end),
          outcome.(fn -> mod.whereis(:rn_c) end)
        ]

        for t <- [:rn_a, :rn_b, :rn_c, u], do: outcome.(fn -> mod.delete(t) end)
        results
      end

      assert run.(Table) == run.(:ets)
    end
  end

  describe "setopts/2 and give_away/3" do
    test "heir, protection, repeated and invalid options, dead heirs: as :ets" do
      outcome = &NativeStore.Test.Differential.outcome/1

      run = fn mod ->
        me = self()
        dead = spawn(fn -> :ok end)
        ref = Process.monitor(dead)
        assert_receive {:DOWN, ^ref, _, _, _}
        other = spawn(fn -> receive do: (:stop -> :ok) end)
        t = mod.new(:setopts_cmp, [:public])

        results = [
          outcome.(fn -> mod.give_away(t, me, :gift) end),
          outcome.(fn -> mod.give_away(t, dead, :gift) end),
          outcome.(fn -> mod.setopts(t, [{:heir, me, :h}]) end),
          outcome.(fn -> mod.info(t, :heir) == me end),
          outcome.(fn -> mod.setopts(t, [{:heir, dead, :h}]) end),
          outcome.(fn -> mod.info(t, :heir) end),
          outcome.(fn -> mod.setopts(t, {:heir, :none}) end),
          outcome.(fn -> mod.setopts(t, [{:heir, :none}, {:heir, other, 1}]) end),
          outcome.(fn -> mod.setopts(t, [{:heir, other, 1}, {:bogus, 1}]) end),
          outcome.(fn -> mod.info(t, :heir) end),
          outcome.(fn -> mod.setopts(t, [{:protection, :private}, {:heir, other, 1}]) end),
          outcome.(fn -> mod.info(t, :protection) end),
          outcome.(fn -> mod.info(t, :heir) == other end),
          outcome.(fn -> mod.setopts(t, [{:protection, :bogus}]) end),
          outcome.(fn -> mod.setopts(t, []) end),
          outcome.(fn -> mod.give_away(t, other, :gift) end),
          outcome.(fn -> mod.info(t, :owner) == other end),
          outcome.(fn -> mod.give_away(t, me, :back) end),
          outcome.(fn -> mod.setopts(t, [{:heir, :none}]) end),
          # Private and owned by `other` now: no access for this process.
          outcome.(fn -> mod.insert(t, {1}) end),
          outcome.(fn -> mod.lookup(t, 1) end)
        ]

        send(other, :stop)
        results
      end

      assert run.(Table) == run.(:ets)
    end
  end
end
