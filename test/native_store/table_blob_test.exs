defmodule NativeStore.TableBlobTest do
  @moduledoc """
  Large binary values of `:set` and `:ordered_set` tables are kept out of
  line and shared with the binaries lookups return (no copy). These tests check that they behave
  exactly as in `:ets`: equal terms everywhere, binaries that outlive the
  object, the table and the process that inserted them, comparisons by
  contents, and tables of other types (which keep the bytes inline).
  """
  use ExUnit.Case, async: true

  alias NativeStore.Table

  @sizes [63, 64, 65, 66, 100, 1024, 5000, 70_000]

  defp both(opts \\ [:set, :public]) do
    {:ets.new(:blob_oracle, opts), Table.new(:blob_native, opts)}
  end

  defp big(n, salt \\ 0), do: :binary.copy(<<rem(n + salt, 251)>>, n) <> <<salt::32>>

  for type <- [:set, :ordered_set] do
    test "#{type}: lookup, lookup_element, take and tab2list return equal binaries" do
      lookups_agree(unquote(type))
    end
  end

  defp lookups_agree(type) do
    {e, t} = both([type, :public])

    for n <- @sizes do
      obj = {n, big(n), n, big(n, 1)}
      :ets.insert(e, obj)
      Table.insert(t, obj)
    end

    for n <- @sizes do
      assert Table.lookup(t, n) == :ets.lookup(e, n)
      assert Table.lookup(t, n) == :ets.lookup(e, n)
      assert Table.lookup_element(t, n, 2) == :ets.lookup_element(e, n, 2)
      assert Table.lookup_element(t, n, 4) == :ets.lookup_element(e, n, 4)
    end

    assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
    assert Table.foldl(&[&1 | &2], [], t) |> Enum.sort() == Enum.sort(:ets.tab2list(e))
    assert Table.take(t, 1024) == :ets.take(e, 1024)
    assert Table.take(t, 1024) == []
    # A taken object that was looked up before (its bytes are shared).
    [_] = Table.lookup(t, 5000)
    assert Table.take(t, 5000) == :ets.take(e, 5000)
    assert Table.info(t, :size) == :ets.info(e, :size)
  end

  test "binaries outlive the object, the table and the process that inserted them" do
    t = Table.new(:blob_outlive, [:set, :public])
    parent = self()

    pid =
      spawn(fn ->
        Table.insert(t, {:k, big(2000, 7), :x})
        send(parent, :inserted)

        receive do
          :exit -> :ok
        end
      end)

    assert_receive :inserted
    [{:k, b1, :x}] = Table.lookup(t, :k)
    # Overwritten, then deleted: the looked-up binary stays valid.
    Table.insert(t, {:k, big(2000, 8), :y})
    [{:k, b2, :y}] = Table.lookup(t, :k)
    Table.delete(t, :k)
    send(pid, :exit)
    :erlang.garbage_collect()
    assert b1 == big(2000, 7)
    assert b2 == big(2000, 8)

    # Sent to another process, then the table is deleted.
    Table.insert(t, {:m, big(3000, 9)})
    [{:m, b3}] = Table.lookup(t, :m)

    reader =
      spawn(fn -> receive do: ({:bin, b, from} -> send(from, {:ok, b == big(3000, 9)})) end)

    Table.delete(t)
    :erlang.garbage_collect()
    send(reader, {:bin, b3, self()})
    assert_receive {:ok, true}
    assert byte_size(b3) == 3004
    assert binary_part(b3, 10, 5) == binary_part(big(3000, 9), 10, 5)
  end

  test "binaries can be matched, split, appended to and sent through term_to_binary" do
    t = Table.new(:blob_use, [:set, :public])
    Table.insert(t, {1, big(1000)})
    [{1, b}] = Table.lookup(t, 1)
    <<first, rest::binary>> = b
    assert first == rem(1000, 251)
    assert byte_size(rest) == 1003
    appended = b <> "tail"
    assert binary_part(appended, 1004, 4) == "tail"
    assert b == big(1000)
    assert :erlang.binary_to_term(:erlang.term_to_binary({1, b})) == {1, big(1000)}
    assert :erlang.phash2(b) == :erlang.phash2(big(1000))
    Table.delete(t)
  end

  test "comparisons see contents: delete_object, replace, insert_new, select, match_object" do
    {e, t} = both()
    obj = {:k, big(500), 1}

    for tab <- [e, t], mod = if(tab == e, do: :ets, else: Table) do
      mod.insert(tab, obj)
      # An equal object built separately (other binary, same bytes).
      assert mod.insert_new(tab, {:k, big(500), 2}) == false
      assert mod.match_object(tab, {:k, big(500), :_}) == [obj]
      assert mod.select(tab, [{{:k, :"$1", :_}, [{:==, :"$1", big(500)}], [:"$1"]}]) == [big(500)]
      assert mod.select_count(tab, [{{:_, big(500), :_}, [], [true]}]) == 1
      mod.delete_object(tab, {:k, big(500, 1), 1})
      assert mod.lookup(tab, :k) == [obj]
      mod.delete_object(tab, {:k, big(500), 1})
      assert mod.lookup(tab, :k) == []
    end

    Table.insert(t, obj)
    assert Table.replace(t, :k, [{:k, big(500), 1}], [{:k, big(600), 2}]) == true
    assert Table.lookup(t, :k) == [{:k, big(600), 2}]
    assert Table.replace(t, :k, [obj], [{:k, big(700), 3}]) == false
  end

  test "update_counter, update_element and select_replace keep or drop blobs" do
    {e, t} = both()

    for {mod, tab} <- [{:ets, e}, {Table, t}] do
      mod.insert(tab, {1, big(1000), 0, big(200)})
      mod.insert(tab, {2, big(1000, 1), 0, :x})
      mod.update_counter(tab, 1, {3, 5})
      mod.update_counter(tab, 1, [{3, 1}, {3, 1}])
      mod.update_element(tab, 2, {2, :small})
      mod.update_element(tab, 1, [{4, big(300)}, {3, 9}])
      mod.update_counter(tab, 3, {3, 1}, {3, big(100), 7, big(80)})
    end

    assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
    assert_raise ArgumentError, fn -> Table.update_counter(t, 1, {2, 1}) end
    spec = [{{:"$1", :"$2", :"$3", :"$4"}, [], [{{:"$1", :"$4", :"$3", :"$2"}}]}]
    assert Table.select_replace(t, spec) == :ets.select_replace(e, spec)
    assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
    Table.delete_all_objects(t)
    :ets.delete_all_objects(e)
    assert Table.tab2list(t) == []
    assert Table.info(t, :size) == 0
  end

  test "info(:memory) counts blobs and gives them back" do
    t = Table.new(:blob_mem, [:set, :public])
    empty = Table.info(t, :memory)
    for i <- 1..200, do: Table.insert(t, {i, big(4000, i)})
    full = Table.info(t, :memory)
    assert full > empty + div(200 * 4000, 8)
    for i <- 1..200, do: Table.lookup(t, i)
    # Same-size entries (a blob is a handle) holding blobs of other sizes.
    for i <- 1..200, do: Table.insert(t, {i, big(100, i)})
    assert Table.info(t, :memory) < full - div(200 * 3000, 8)
    for i <- 1..200, do: Table.insert(t, {i, big(8000, i)})
    assert Table.info(t, :memory) > full + div(200 * 3000, 8)
    for i <- 1..200, do: Table.delete(t, i)
    # The hash slots stay; the blobs' bytes are given back.
    assert Table.info(t, :memory) < empty + div(200 * 100, 8)
    Table.delete(t)
  end

  test "tab2file and file2tab round-trip large binaries" do
    {_e, t} = both()
    for i <- 1..50, do: Table.insert(t, {i, big(100 * i, i), [big(70)]})

    path =
      Path.join(System.tmp_dir!(), "blob_#{System.unique_integer([:positive])}.tab")
      |> String.to_charlist()

    try do
      :ok = Table.tab2file(t, path)
      {:ok, t2} = Table.file2tab(path)
      assert Enum.sort(Table.tab2list(t2)) == Enum.sort(Table.tab2list(t))
      Table.delete(t2)
    after
      File.rm(path)
    end
  end

  test "all table types with large keys and values (bags keep bytes inline)" do
    for type <- [:ordered_set, :bag, :duplicate_bag, :set] do
      {e, t} = both([type, :public])

      for {mod, tab} <- [{:ets, e}, {Table, t}] do
        mod.insert(tab, {big(2000), big(1000), 1})
        mod.insert(tab, {1, big(1000), 2})
        mod.insert(tab, {1, big(1000, 3), 3})
        mod.insert(tab, [{2, big(80)}, {3, big(90)}])
      end

      assert Table.lookup(t, big(2000)) == :ets.lookup(e, big(2000))
      assert Table.lookup(t, 1) == :ets.lookup(e, 1)
      assert Enum.sort(Table.tab2list(t)) == Enum.sort(:ets.tab2list(e))
      Table.delete_object(t, {1, big(1000), 2})
      :ets.delete_object(e, {1, big(1000), 2})
      assert Table.lookup(t, 1) == :ets.lookup(e, 1)
    end
  end

  test "concurrent writers, readers and dying owners" do
    t = Table.new(:blob_conc, [:set, :public, {:write_concurrency, true}])
    parent = self()

    pids =
      for w <- 1..4 do
        spawn_link(fn ->
          for i <- 1..3000 do
            k = rem(i * 7 + w, 64)

            case rem(i + w, 5) do
              0 -> Table.insert(t, {k, big(500 + k, k), i})
              1 -> Table.delete(t, k)
              2 -> Table.take(t, k)
              _ -> for {^k, b, _} <- Table.lookup(t, k), do: true = b == big(500 + k, k)
            end
          end

          send(parent, {:done, w})
        end)
      end

    for w <- 1..4, do: assert_receive({:done, ^w}, 30_000)
    assert Enum.all?(pids, &(not Process.alive?(&1)))

    for {k, b, _} <- Table.tab2list(t), do: assert(b == big(500 + k, k))

    # A table owned by a process that dies (reclaimed on its exit).
    owner =
      spawn(fn ->
        o = Table.new(:blob_owned, [:set, :public])
        for i <- 1..100, do: Table.insert(o, {i, big(1000, i)})
        send(parent, {:tab, o, Table.lookup(o, 5)})
        receive do: (:stop -> :ok)
      end)

    assert_receive {:tab, _o, [{5, b5}]}
    ref = Process.monitor(owner)
    send(owner, :stop)
    assert_receive {:DOWN, ^ref, :process, _, _}
    :erlang.garbage_collect()
    assert b5 == big(1000, 5)
    Table.delete(t)
  end
end
