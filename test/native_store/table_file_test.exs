defmodule NativeStore.TableFileTest do
  @moduledoc """
  ETS's file functions on NativeStore tables (`tab2file/2,3`,
  `file2tab/1,2`, `tabfile_info/1`, `to_dets/2`, `from_dets/2`), checked
  against `:ets` as the oracle: the same table is built in both, and every
  file is read back by both `:ets` and `NativeStore.Table`, so files are
  interchangeable both ways and every result and error matches ETS's.
  """
  use ExUnit.Case, async: true

  import NativeStore.Test.Differential, only: [outcome: 1, same?: 2, canonical_sort: 1]
  alias NativeStore.Table

  @types [:set, :ordered_set, :bag, :duplicate_bag]
  @header_items [:name, :type, :keypos, :protection, :named_table, :size]
  @ext_infos [[], [:md5sum], [:object_count], [:object_count, :md5sum]]

  # ---- helpers

  setup do
    dir = Path.join(System.tmp_dir!(), "ns_file_test_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  # A fresh file name (a charlist, as ETS requires) in the test's directory.
  defp path(dir, base), do: String.to_charlist(Path.join(dir, "#{base}_#{uniq()}.tab"))

  defp uniq, do: System.unique_integer([:positive])
  defp uniq_name(prefix), do: :"#{prefix}_#{uniq()}"

  # Made once so both tables hold the very same pid/ref/big binary.
  defp pool do
    big_map = Map.new(1..40, fn i -> {{:k, i}, i * 1.5} end)

    [
      1,
      1.0,
      2.5,
      -0.5,
      Bitwise.bsl(1, 200),
      -Bitwise.bsl(1, 100),
      :atom,
      "small",
      <<>>,
      :binary.copy("big", 40_000),
      <<1::3>>,
      %{"b" => [1, 2], :a => 1},
      big_map,
      %{},
      self(),
      make_ref(),
      {{1, {2, [3, {4.0}]}}, []},
      [1 | 2],
      [],
      {}
    ]
  end

  # Objects of at least `keypos + 1` elements with the key at `keypos`,
  # several per key (identical duplicates too, for duplicate bags).
  defp objects(keypos) do
    p = pool()

    for {k, i} <- Enum.with_index(p), v <- [Enum.at(p, rem(i + 3, length(p))), i, i] do
      case keypos do
        1 -> {k, v, i}
        2 -> {v, k, i}
      end
    end
  end

  defp build(mod, name, opts, objs) do
    t = mod.new(name, opts)
    for o <- objs, do: mod.insert(t, o)
    t
  end

  defp header_info(mod, t), do: Map.new(@header_items, &{&1, mod.info(t, &1)})

  defp contents(mod, t), do: canonical_sort(mod.tab2list(t))

  defp keys(mod, t), do: mod.tab2list(t) |> Enum.map(&elem(&1, mod.info(t, :keypos) - 1))

  defp delete_tab(mod, t), do: if(mod.info(t) != :undefined, do: mod.delete(t))

  # Runs `fun` in a fresh process that owns nothing.
  defp in_other_process(fun) do
    task = Task.async(fn -> outcome(fun) end)
    Task.await(task, 30_000)
  end

  # ---- round trips and interop

  for type <- @types, protection <- [:public, :protected, :private], keypos <- [1, 2] do
    test "#{type} #{protection} keypos #{keypos}: round trip and interop with :ets", %{dir: dir} do
      opts = [unquote(type), unquote(protection), {:keypos, unquote(keypos)}]
      objs = objects(unquote(keypos))
      name = uniq_name(:rt)

      for named <- [false, true] do
        opts = if named, do: [:named_table | opts], else: opts
        ns = build(Table, name, opts, objs)
        et = build(:ets, name, opts, objs)
        expected = contents(:ets, et)
        expected_info = header_info(:ets, et)
        assert contents(Table, ns) === expected
        assert header_info(Table, ns) == expected_info

        ns_file = path(dir, "ns")
        et_file = path(dir, "ets")
        assert Table.tab2file(ns, ns_file) == :ok
        assert :ets.tab2file(et, et_file) == :ok
        assert Table.tabfile_info(ns_file) == :ets.tabfile_info(et_file)
        # Named tables: the name must be free again for file2tab.
        Table.delete(ns)
        :ets.delete(et)

        for file <- [ns_file, et_file] do
          assert {:ok, ns2} = Table.file2tab(file)
          assert {:ok, et2} = :ets.file2tab(file)
          if named, do: assert(ns2 == name), else: assert(is_reference(ns2))
          assert contents(Table, ns2) === expected
          assert contents(:ets, et2) === expected
          # Per key, in order: a bag's objects load in ETS's order.
          for k <- keys(:ets, et2), do: assert(Table.lookup(ns2, k) === :ets.lookup(et2, k))
          assert header_info(Table, ns2) == expected_info
          assert header_info(:ets, et2) == expected_info
          assert Table.info(ns2, :owner) == self()
          assert Table.tabfile_info(file) === :ets.tabfile_info(file)
          Table.delete(ns2)
          :ets.delete(et2)
        end
      end
    end
  end

  test "ordered_set keeps whichever of 1 and 1.0 ETS keeps", %{dir: dir} do
    objs = [{1, :int}, {1.0, :float}, {2.0, :f2}, {2, :i2}, {3, :x}]
    ns = build(Table, :o, [:ordered_set], objs)
    et = build(:ets, :o, [:ordered_set], objs)
    f1 = path(dir, "ns")
    f2 = path(dir, "ets")
    :ok = Table.tab2file(ns, f1)
    :ok = :ets.tab2file(et, f2)
    {:ok, a} = Table.file2tab(f2)
    {:ok, b} = :ets.file2tab(f1)
    # ordered: compare exactly, in key order
    assert Table.tab2list(a) === :ets.tab2list(et)
    assert :ets.tab2list(b) === :ets.tab2list(et)
    assert Table.tab2list(ns) === :ets.tab2list(et)
  end

  test "bags with many objects per key load in ETS's order (chunk boundaries)", %{dir: dir} do
    for type <- [:bag, :duplicate_bag], writer <- [Table, :ets] do
      objs = for i <- 1..450, do: {rem(i, 3), div(i, 2), i}
      t = build(writer, :many, [type], objs)
      f = path(dir, "many")
      :ok = writer.tab2file(t, f)
      {:ok, n} = Table.file2tab(f)
      {:ok, e} = :ets.file2tab(f)
      for k <- 0..2, do: assert(Table.lookup(n, k) === :ets.lookup(e, k))
      assert Table.info(n, :size) == :ets.info(e, :size)
    end
  end

  test "table options in the header (compressed, read/write concurrency) are restored",
       %{dir: dir} do
    for opts <- [
          [:compressed, {:read_concurrency, true}, {:write_concurrency, true}],
          [:ordered_set, {:write_concurrency, true}],
          [:bag, {:read_concurrency, true}]
        ] do
      et = build(:ets, :opts, opts, [{1, 2}])
      ns = build(Table, :opts, opts, [{1, 2}])
      f1 = path(dir, "ns")
      f2 = path(dir, "ets")
      :ok = Table.tab2file(ns, f1)
      :ok = :ets.tab2file(et, f2)

      for f <- [f1, f2], item <- [:compressed, :read_concurrency, :write_concurrency, :type] do
        {:ok, n} = Table.file2tab(f)
        {:ok, e} = :ets.file2tab(f)
        assert Table.info(n, item) == :ets.info(e, item), "#{item} of #{inspect(opts)}"
      end
    end
  end

  test "an empty table and the {:table, tab} option", %{dir: dir} do
    ns = Table.new(:empty, [:bag])
    et = :ets.new(:empty, [:bag])
    f1 = path(dir, "ns")
    f2 = path(dir, "ets")
    :ok = Table.tab2file(ns, f1, extended_info: [:object_count])
    :ok = :ets.tab2file(et, f2, extended_info: [:object_count])
    assert Table.tabfile_info(f1) == :ets.tabfile_info(f2)
    {:ok, n} = Table.file2tab(f2, verify: true)
    assert Table.tab2list(n) == [] and Table.info(n, :type) == :bag

    # {:table, tab}: load into an existing table (undocumented in ETS).
    src = build(:ets, :src, [:set], [{1, :a}, {2, :b}])
    f3 = path(dir, "src")
    :ok = :ets.tab2file(src, f3)
    target_ns = build(Table, :tgt, [:set, :public], [{3, :c}, {1, :old}])
    target_et = build(:ets, :tgt, [:set, :public], [{3, :c}, {1, :old}])
    assert {:ok, ^target_ns} = Table.file2tab(f3, table: target_ns)
    assert {:ok, ^target_et} = :ets.file2tab(f3, table: target_et)
    assert contents(Table, target_ns) === contents(:ets, target_et)
  end

  # ---- tabfile_info, extended info and verification

  test "tabfile_info equals ETS's for every extended_info and both writers", %{dir: dir} do
    objs = objects(1)

    for type <- @types, ext <- @ext_infos, sync <- [true, false] do
      name = uniq_name(:ti)
      opts = [type, :named_table, :public]
      ns = build(Table, name, opts, objs)
      et = build(:ets, name, opts, objs)
      f1 = path(dir, "ns")
      f2 = path(dir, "ets")
      assert Table.tab2file(ns, f1, extended_info: ext, sync: sync) == :ok
      assert :ets.tab2file(et, f2, extended_info: ext, sync: sync) == :ok
      expected = :ets.tabfile_info(f2)
      assert {:ok, [_ | _]} = expected
      assert Table.tabfile_info(f1) === expected
      assert :ets.tabfile_info(f1) === expected
      assert Table.tabfile_info(f2) === expected
    end
  end

  test "extended_info and verify: true, both writers and both readers", %{dir: dir} do
    objs = objects(2)

    for type <- @types, ext <- @ext_infos do
      opts = [type, {:keypos, 2}]
      ns = build(Table, :v, opts, objs)
      et = build(:ets, :v, opts, objs)
      expected = contents(:ets, et)
      f1 = path(dir, "ns")
      f2 = path(dir, "ets")
      :ok = Table.tab2file(ns, f1, extended_info: ext)
      :ok = :ets.tab2file(et, f2, extended_info: ext)

      for f <- [f1, f2], verify <- [true, false] do
        assert {:ok, n} = Table.file2tab(f, verify: verify)
        assert {:ok, e} = :ets.file2tab(f, verify: verify)
        assert contents(Table, n) === expected
        assert contents(:ets, e) === expected
      end
    end
  end

  # Reads `file` with both readers (verify on and off) and requires the same
  # outcome: the same error tuple, or tables with the same contents.
  defp same_read(file) do
    for verify <- [false, true] do
      n = Table.file2tab(file, verify: verify)
      e = :ets.file2tab(file, verify: verify)

      case {n, e} do
        {{:ok, n}, {:ok, e}} ->
          assert contents(Table, n) === contents(:ets, e)
          assert header_info(Table, n) == header_info(:ets, e)
          {:ok, Table.info(n, :size)}

        _ ->
          assert n == e, "verify: #{verify}"
          n
      end
    end
  end

  test "corrupted and truncated files give ETS's results", %{dir: dir} do
    objs = objects(1)
    outcomes = MapSet.new()

    outcomes =
      for ext <- @ext_infos, writer <- [Table, :ets], reduce: outcomes do
        acc ->
          t = build(writer, :c, [:set], objs)
          f = path(dir, "c")
          :ok = writer.tab2file(t, f, extended_info: ext)
          good = File.read!(f)
          size = byte_size(good)

          cuts = [1, 4, 9, 30, div(size, 2), size - 100, size - 20]

          truncated =
            for cut <- cuts, cut > 0 and cut < size, do: binary_part(good, 0, size - cut)

          flipped =
            for pos <- [div(size, 3), div(size, 2), size - 10, size - 3] do
              <<a::binary-size(pos), b, rest::binary>> = good
              <<a::binary, Bitwise.bxor(b, 0x55), rest::binary>>
            end

          for bytes <- truncated ++ flipped, reduce: acc do
            acc ->
              File.write!(f, bytes)
              acc |> MapSet.put(same_read(f)) |> MapSet.put(Table.tabfile_info(f))
          end
      end

    # The corruptions really reach the error paths (and some still load).
    results = outcomes |> Enum.to_list() |> List.flatten()
    assert {:error, :badfile} in results
    assert Enum.any?(results, &match?({:ok, n} when is_integer(n), &1))
  end

  # Writes a file by hand, as tab2file does, to forge inconsistent ones.
  defp forge(file, header_tab, objects, ext, end_info, extra \\ []) do
    {:ok, log} = :disk_log.open(name: make_ref(), file: file)
    info = :ets.info(header_tab)
    :ok = :disk_log.log_terms(log, [List.to_tuple(info ++ extra ++ [extended_info: ext])])
    :ok = :disk_log.log_terms(log, objects)
    if end_info != [], do: :ok = :disk_log.log_terms(log, [[:"$end_of_table", end_info]])
    :ok = :disk_log.close(log)
  end

  test "forged files: wrong counts, wrong checksum, non-tuple objects", %{dir: dir} do
    hdr = build(:ets, :forged, [:set], [{1, 1}, {2, 2}, {3, 3}])
    objs = [{1, 1}, {2, 2}]
    md5 = :erlang.md5("not this")

    cases = [
      # header says 3 objects, file holds 2
      {[], []},
      {[:object_count], [count: 5]},
      {[:object_count], []},
      {[:md5sum], [md5: md5]},
      {[:md5sum, :object_count], [count: 2, md5: md5]},
      {[], [count: 2]}
    ]

    results =
      for {ext, end_info} <- cases do
        f = path(dir, "forged")
        forge(f, hdr, objs, ext, end_info)
        assert Table.tabfile_info(f) === :ets.tabfile_info(f)
        same_read(f)
      end

    assert [{:error, :invalid_object_count}] -- List.flatten(results) == []
    assert [{:error, :checksum_error}] -- List.flatten(results) == []

    # A newer file version: refused, except by the verifying reader, which
    # (in ETS) looks for the version under other tags.
    f = path(dir, "v2")
    forge(f, hdr, :ets.tab2list(hdr), [], [], major_version: 2, minor_version: 5)
    assert [{:error, {:unsupported_file_version, {2, 5}}}, {:ok, 3}] = same_read(f)
    assert {:ok, info} = Table.tabfile_info(f)
    assert info[:version] == {2, 5} and {:ok, info} == :ets.tabfile_info(f)

    # A non-tuple object: both raise ArgumentError and leave no table behind.
    name = uniq_name(:forged_named)
    named_hdr = :ets.new(name, [:named_table])
    :ets.insert(named_hdr, {1, 1})
    f = path(dir, "bad_obj")
    forge(f, named_hdr, [{1, 1}, :not_a_tuple], [], [])
    :ets.delete(named_hdr)
    assert {:raise, ArgumentError} = outcome(fn -> :ets.file2tab(f) end)
    assert {:raise, ArgumentError} = outcome(fn -> Table.file2tab(f) end)
    assert :ets.whereis(name) == :undefined
    assert Table.whereis(name) == :undefined
  end

  test "missing, non-log and unreadable files give ETS's errors", %{dir: dir} do
    missing = path(dir, "missing")
    assert Table.file2tab(missing) == :ets.file2tab(missing)
    assert Table.file2tab(missing, verify: true) == :ets.file2tab(missing, verify: true)
    assert Table.tabfile_info(missing) == :ets.tabfile_info(missing)
    assert {:error, {:read_error, _}} = Table.file2tab(missing)

    garbage = path(dir, "garbage")
    File.write!(garbage, "this is not a disk_log")
    assert Table.file2tab(garbage) == :ets.file2tab(garbage)
    assert Table.tabfile_info(garbage) == :ets.tabfile_info(garbage)

    empty = path(dir, "empty")
    File.write!(empty, "")
    assert Table.file2tab(empty) == :ets.file2tab(empty)
    assert Table.tabfile_info(empty) == :ets.tabfile_info(empty)

    # A log whose first term is not a table header.
    {:ok, log} = :disk_log.open(name: make_ref(), file: path(dir, "x"))
    :disk_log.close(log)
    not_tab = path(dir, "not_tab")
    {:ok, log} = :disk_log.open(name: make_ref(), file: not_tab)
    :ok = :disk_log.log_terms(log, [{:hello, :world}, {1, 2}])
    :ok = :disk_log.close(log)
    assert Table.file2tab(not_tab) == :ets.file2tab(not_tab)
    assert Table.file2tab(not_tab, verify: true) == :ets.file2tab(not_tab, verify: true)
    assert Table.tabfile_info(not_tab) == :ets.tabfile_info(not_tab)

    # Binary file names: ETS takes charlists and atoms only.
    bin = List.to_string(path(dir, "bin"))
    t = Table.new(:b, [])
    e = :ets.new(:b, [])
    assert Table.tab2file(t, bin) == :ets.tab2file(e, bin)
    assert Table.file2tab(bin) == :ets.file2tab(bin)
    assert same?(outcome(fn -> Table.tabfile_info(bin) end), {:raise, FunctionClauseError})
    assert same?(outcome(fn -> :ets.tabfile_info(bin) end), {:raise, FunctionClauseError})
  end

  test "a named table name clash gives {:error, :cannot_create_table}", %{dir: dir} do
    name = uniq_name(:clash)
    ns = build(Table, name, [:named_table], [{1, 2}])
    et = build(:ets, name, [:named_table], [{1, 2}])
    f1 = path(dir, "ns")
    f2 = path(dir, "ets")
    :ok = Table.tab2file(ns, f1)
    :ok = :ets.tab2file(et, f2)

    for f <- [f1, f2], verify <- [false, true] do
      expected = :ets.file2tab(f, verify: verify)
      assert expected == {:error, :cannot_create_table}
      assert Table.file2tab(f, verify: verify) == expected
    end

    # The existing tables are untouched.
    assert Table.lookup(name, 1) == [{1, 2}]
  end

  test "bad arguments and options give ETS's results", %{dir: dir} do
    ns = build(Table, :args, [], [{1, 2}])
    et = build(:ets, :args, [], [{1, 2}])
    f = path(dir, "args")

    for opts <- [
          [:bad],
          [{:extended_info, [:foo]}],
          [{:extended_info, :md5sum}],
          [{:extended_info, [:md5sum]}, {:extended_info, [:object_count]}],
          [{:sync, :maybe}],
          [{:sync, true} | :improper]
        ] do
      assert Table.tab2file(ns, f, opts) == :ets.tab2file(et, f, opts), inspect(opts)
      refute File.exists?(f)
    end

    assert same?(outcome(fn -> Table.tab2file(ns, f, :x) end), {:raise, FunctionClauseError})
    assert same?(outcome(fn -> :ets.tab2file(et, f, :x) end), {:raise, FunctionClauseError})

    :ok = Table.tab2file(ns, f)

    for opts <- [[:x], [{:verify, 1}], :x, [{:table, ns}, {:table, ns}]] do
      assert Table.file2tab(f, opts) == :ets.file2tab(f, opts), inspect(opts)
    end

    # A table that does not exist.
    gone = uniq_name(:gone)
    assert Table.tab2file(gone, f) == :ets.tab2file(gone, f)
    assert Table.tab2file(gone, f) == {:error, :badtab}
    refute File.exists?(f)

    assert same?(
             outcome(fn -> Table.tab2file(123, f) end),
             outcome(fn -> :ets.tab2file(123, f) end)
           )

    # A directory that does not exist.
    nodir = String.to_charlist(Path.join([dir, "no", "such", "dir.tab"]))
    assert Table.tab2file(ns, nodir) == :ets.tab2file(et, nodir)

    # An existing file is replaced.
    :ok = Table.tab2file(ns, f)
    Table.insert(ns, {3, 4})
    :ok = Table.tab2file(ns, f)
    {:ok, n} = Table.file2tab(f)
    assert contents(Table, n) == [{1, 2}, {3, 4}]
  end

  test "a private table of another process: ArgumentError and no file left", %{dir: dir} do
    ns = build(Table, :priv, [:private], [{1, 2}])
    et = build(:ets, :priv, [:private], [{1, 2}])
    f1 = path(dir, "ns")
    f2 = path(dir, "ets")
    expected = in_other_process(fn -> :ets.tab2file(et, f2) end)
    assert expected == {:raise, ArgumentError}
    assert in_other_process(fn -> Table.tab2file(ns, f1) end) == expected
    refute File.exists?(f1)
    refute File.exists?(f2)

    # A protected table is readable by others; the loaded copy belongs to the reader.
    p = build(Table, :prot, [:protected], [{1, 2}])
    f3 = path(dir, "prot")
    assert in_other_process(fn -> Table.tab2file(p, f3) end) == {:ok, :ok}

    assert {:ok, {:ok, owner}} =
             in_other_process(fn ->
               {:ok, t} = Table.file2tab(f3)
               {:ok, Table.info(t, :owner) == self()}
             end)

    assert owner
  end

  # ---- dets

  defp open_dets(dir, type, objects) do
    name = uniq_name(:dets)
    file = path(dir, "dets")
    {:ok, ^name} = :dets.open_file(name, file: file, type: type)
    :ok = :dets.insert(name, objects)
    name
  end

  defp dets_contents(d), do: canonical_sort(:dets.match_object(d, :_))

  test "to_dets/2 and from_dets/2 do what they do with :ets", %{dir: dir} do
    for type <- @types, keypos <- [1, 2] do
      objs = objects(keypos)
      opts = [type, :public, {:keypos, keypos}]
      ns = build(Table, :d, opts, objs)
      et = build(:ets, :d, opts, objs)
      dets_type = if type == :ordered_set, do: :set, else: type

      # to_dets empties the dets table first.
      d1 = open_dets(dir, dets_type, [{:junk, 1}])
      d2 = open_dets(dir, dets_type, [{:junk, 1}])
      assert Table.to_dets(ns, d1) == d1
      assert :ets.to_dets(et, d2) == d2
      assert dets_contents(d1) === dets_contents(d2)
      assert dets_contents(d1) != []

      # from_dets inserts into what is there.
      seed = [{:old, keypos, :x}, {1, 1, :y}]
      ns2 = build(Table, :d2, opts, seed)
      et2 = build(:ets, :d2, opts, seed)
      assert Table.from_dets(ns2, d1) == true
      assert :ets.from_dets(et2, d1) == true
      assert contents(Table, ns2) === contents(:ets, et2)
      assert Table.info(ns2, :size) == :ets.info(et2, :size)
    end
  end

  test "to_dets/2 and from_dets/2 errors match :ets", %{dir: dir} do
    ns = build(Table, :de, [:public], [{1, 2}])
    et = build(:ets, :de, [:public], [{1, 2}])
    d = open_dets(dir, :set, [{5, 6}])
    no_dets = uniq_name(:no_dets)
    gone = uniq_name(:gone)

    pairs = [
      {fn -> Table.to_dets(ns, no_dets) end, fn -> :ets.to_dets(et, no_dets) end},
      {fn -> Table.from_dets(ns, no_dets) end, fn -> :ets.from_dets(et, no_dets) end},
      {fn -> Table.to_dets(gone, d) end, fn -> :ets.to_dets(gone, d) end},
      {fn -> Table.from_dets(gone, d) end, fn -> :ets.from_dets(gone, d) end},
      {fn -> Table.to_dets(make_ref(), d) end, fn -> :ets.to_dets(make_ref(), d) end}
    ]

    for {ours, theirs} <- pairs do
      expected = outcome(theirs)
      assert {:raise, _} = expected
      assert same?(outcome(ours), expected)
    end

    # Not the owner of a protected table: from_dets cannot write into it.
    prot_ns = build(Table, :dp, [:protected], [])
    prot_et = build(:ets, :dp, [:protected], [])
    expected = in_other_process(fn -> :ets.from_dets(prot_et, d) end)
    assert {:raise, _} = expected
    assert in_other_process(fn -> Table.from_dets(prot_ns, d) end) == expected

    # The table is untouched by the failed attempts.
    assert Table.tab2list(ns) == [{1, 2}]
    delete_tab(Table, prot_ns)
  end

  # ---- big tables

  @tag timeout: 120_000
  test "a 200k-object table round trips in chunks (bounded process heap)", %{dir: dir} do
    n = 200_000
    ns = Table.new(:big, [:set, :public])
    Table.insert(ns, Enum.map(1..n, &{&1, &1 * 2, "v"}))
    f = path(dir, "big")

    # A list of the whole table needs ~1.8M words: a heap capped at 1M words
    # is killed if tab2file or file2tab ever builds one. (Chunked, tab2file
    # peaks at 200k-400k words of heap, file2tab under 50k.)
    capped = fn fun ->
      Task.async(fn ->
        Process.flag(:max_heap_size, %{size: 1_000_000, kill: true, error_logger: false})
        fun.()
      end)
      |> Task.await(60_000)
    end

    assert capped.(fn -> Table.tab2file(ns, f, extended_info: [:md5sum, :object_count]) end) ==
             :ok

    assert {:ok, info} = :ets.tabfile_info(f)
    assert info[:size] == n
    assert Table.tabfile_info(f) == {:ok, info}

    {loaded, size, sample} =
      capped.(fn ->
        {:ok, t} = Table.file2tab(f, verify: true)
        {t, Table.info(t, :size), Enum.map([1, 777, n], &Table.lookup(t, &1))}
      end)

    assert is_reference(loaded)
    assert size == n
    assert sample == [[{1, 2, "v"}], [{777, 1554, "v"}], [{n, 2 * n, "v"}]]

    # ETS reads the same file, and writes one that NativeStore reads back.
    {:ok, e} = :ets.file2tab(f, verify: true)
    assert :ets.info(e, :size) == n
    assert :ets.lookup(e, 123_456) == [{123_456, 246_912, "v"}]
    f2 = path(dir, "big_ets")
    :ok = :ets.tab2file(e, f2, extended_info: [:md5sum])
    {:ok, back} = Table.file2tab(f2, verify: true)
    assert Table.info(back, :size) == n

    assert Table.select_count(back, [
             {{:"$1", :"$2", "v"}, [{:==, :"$2", {:*, :"$1", 2}}], [true]}
           ]) == n
  end
end
