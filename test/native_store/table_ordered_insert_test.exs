defmodule NativeStore.TableOrderedInsertTest do
  @moduledoc """
  Single-object inserts into an `ordered_set` (built under the part lock for
  small objects, before it for big ones): equal keys of other spellings,
  out-of-line binaries, the thread's spare entry, memory counts, against
  `:ets`.
  """
  use ExUnit.Case, async: false
  alias NativeStore.Table

  @keys [
    0,
    1,
    1.0,
    -0.0,
    0.0,
    2,
    2.0,
    3.5,
    {1},
    {1.0},
    {0.0},
    {-0.0},
    [1.0],
    [1],
    :a,
    "k",
    <<0::size(800)>>,
    1_180_591_620_717_411_303_424,
    1.180591620717411303424e21,
    -1,
    -1.0,
    9_223_372_036_854_775_807,
    9_223_372_036_854_775_807 * 1.0,
    {:a, 1.0},
    {:a, 1}
  ]

  defp val(i) do
    case rem(i, 5) do
      0 -> i
      # out of line (a blob: >= 65 bytes)
      1 -> :binary.copy(<<rem(i, 251)>>, 100 + rem(i, 3))
      2 -> :binary.copy(<<rem(i, 251)>>, 10)
      3 -> {i, :binary.copy(<<rem(i, 251)>>, 70)}
      # objects of more than 256 bytes: their entries are built before the lock
      4 -> Enum.to_list(i..(i + 40 + rem(i, 60)))
    end
  end

  defp check(t, e) do
    assert Table.tab2list(t) == :ets.tab2list(e)
    for k <- @keys, do: assert(Table.lookup(t, k) == :ets.lookup(e, k), inspect(k))
  end

  test "single-object inserts into ordered_set match ETS (equal keys, blobs, spare)" do
    :rand.seed(:exsss, {1, 2, 3})
    t = Table.new(:ord_ins, [:ordered_set, :public])
    e = :ets.new(:ord_ins, [:ordered_set, :public])

    for i <- 1..20_000 do
      k = Enum.random(@keys)

      obj =
        case rem(i, 3) do
          0 -> {k, val(i)}
          1 -> {k, val(i), val(i + 1), val(i + 2)}
          2 -> {k}
        end

      if rem(i, 17) == 0 do
        Table.delete(t, k)
        :ets.delete(e, k)
      else
        Table.insert(t, obj)
        :ets.insert(e, obj)
      end

      if rem(i, 500) == 0 do
        :erlang.garbage_collect()
        check(t, e)
      end
    end

    check(t, e)
    # memory: the same contents built afresh count the same
    t2 = Table.new(:ord_ins2, [:ordered_set, :public])
    for o <- :ets.tab2list(e), do: Table.insert(t2, o)
    assert Table.info(t, :memory) == Table.info(t2, :memory)
    for o <- :ets.tab2list(e), do: Table.delete(t, elem(o, 0))
    for o <- :ets.tab2list(e), do: Table.delete(t2, elem(o, 0))
    assert Table.info(t, :memory) == Table.info(t2, :memory)
  end

  test "blobs survive the replaced entry and the caller's binary" do
    t = Table.new(:ord_ins3, [:ordered_set, :public])

    for round <- 1..200 do
      b = :binary.copy(<<round>>, 1000)
      Table.insert(t, {1, b})
      Table.insert(t, {1.0, b, b})
      # spare path
      Table.insert(t, {2, round})
      Table.insert(t, {2.0, round + 1})
    end

    :erlang.garbage_collect()
    assert [{1.0, b, b}] = Table.lookup(t, 1)
    assert b == :binary.copy(<<200>>, 1000)
    assert [{2.0, 201}] = Table.lookup(t, 2)
  end

  test "concurrent single inserts of equal keys" do
    t = Table.new(:ord_ins4, [:ordered_set, :public, write_concurrency: true])

    tasks =
      for p <- 1..4 do
        Task.async(fn ->
          for i <- 1..20_000 do
            k = rem(i * p, 500)
            k = if rem(i, 2) == 0, do: k * 1.0, else: k
            Table.insert(t, {k, :binary.copy(<<p>>, 80), i})
          end
        end)
      end

    Enum.each(tasks, &Task.await(&1, 60_000))
    l = Table.tab2list(t)
    assert length(l) == 500

    for {_k, b, _} <- l,
        do: assert(byte_size(b) == 80 and b == :binary.copy(:binary.part(b, 0, 1), 80))
  end
end
