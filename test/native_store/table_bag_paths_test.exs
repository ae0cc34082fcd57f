defmodule NativeStore.TableBagPathsTest do
  @moduledoc """
  The fast paths of `:bag` and `:duplicate_bag` point operations against
  `:ets`: single-object inserts (whose bytes go straight into the key's
  bucket), bag identity (compared from the objects' last word first, with
  floats and external-format values compared as terms), and the decoding
  of a key's objects by `lookup/2`, `take/2` and `slot/2` (tuples of
  immediate words rebuilt inline, anything else through the general
  decoder, up to 32 objects from the stack and more from one vector).

  Every object is inserted one by one into both tables and every key's
  objects are compared exactly (insertion order included).
  """
  use ExUnit.Case, async: true

  import Bitwise
  import NativeStore.Test.Differential, only: [canonical_sort: 1]
  alias NativeStore.Table

  @types [:bag, :duplicate_bag]

  # Keys of every kind the lookup path tells apart: small integers and
  # atoms (looked up by their word), integers past the VM's small range,
  # floats whose zeros are one key, binaries and tuples (encoded keys).
  @keys [
    0,
    1,
    -1,
    42,
    1 <<< 59,
    -(1 <<< 59) - 1,
    1 <<< 62,
    -(1 <<< 62),
    :a,
    :some_atom,
    1.0,
    0.0,
    -0.0,
    "k",
    {:users, "id-7"},
    {1, {2, 3}},
    [1, 2]
  ]

  # Values: immediates (the inline path), and others (floats, both zeros,
  # binaries, nested values, maps, pids, refs, funs, big integers).
  defp values do
    [
      1,
      2,
      :x,
      [],
      self(),
      0.0,
      -0.0,
      1.5,
      "bin",
      :binary.copy("b", 100),
      {0.0, [-0.0]},
      %{a: 0.0},
      %{a: -0.0},
      make_ref(),
      1 <<< 70,
      1 <<< 60,
      fn -> :ok end
    ]
  end

  defp pair(type, opts \\ []) do
    {:ets.new(:bag_paths_ets, [type, :public | opts]),
     Table.new(:bag_paths_native, [type, :public | opts])}
  end

  defp both_insert({e, n}, object) do
    assert :ets.insert(e, object) == Table.insert(n, object)
  end

  defp assert_key_same({e, n}, key) do
    assert Table.lookup(n, key) === :ets.lookup(e, key),
           "lookup #{inspect(key)}"
  end

  defp assert_all_same({e, n} = t, keys) do
    for k <- keys, do: assert_key_same(t, k)
    assert :ets.info(e, :size) == Table.info(n, :size)
    assert canonical_sort(:ets.tab2list(e)) === canonical_sort(Table.tab2list(n))
  end

  for type <- @types do
    test "#{type}: one-object inserts keep ETS's objects, identity and order" do
      t = pair(unquote(type))

      for k <- @keys, v <- values(), w <- [0, 1] do
        both_insert(t, {k, v, w})
        # Again: a bag keeps one copy of an identical object, a duplicate
        # bag every copy.
        if w == 1, do: both_insert(t, {k, v, w})
      end

      # Identical objects spelled with the other zero (0.0 =:= -0.0 on
      # this VM when the two are one key) and objects differing only in
      # their first bytes.
      for k <- @keys do
        both_insert(t, {k, {-0.0, [0.0]}, 0})
        both_insert(t, {k, %{a: 0.0}, 1})
        both_insert(t, {k, :p, 5})
        both_insert(t, {k, :q, 5})
      end

      assert_all_same(t, @keys ++ [:missing, 7, 2.5])
    end

    test "#{type}: 0, 1, 31, 32, 33 and 100 objects under a key (stack and vector paths)" do
      t = pair(unquote(type))
      counts = [1, 31, 32, 33, 100]

      for {n, i} <- Enum.with_index(counts), j <- 1..n do
        # Word tuples, with a non-flat object now and then in the same key.
        object = if rem(j, 7) == 0, do: {i, "v#{j}", j}, else: {i, j, :w}
        both_insert(t, object)
      end

      keys = [-5 | Enum.to_list(0..(length(counts) - 1))]
      assert_all_same(t, keys)
      {e, n} = t

      # slot/2 decodes a key's objects the same way.
      slots = fn slot ->
        Stream.iterate(0, &(&1 + 1))
        |> Enum.reduce_while([], fn i, acc ->
          case slot.(i) do
            :"$end_of_table" -> {:halt, acc}
            objs -> {:cont, [objs | acc]}
          end
        end)
        |> Enum.reject(&(&1 == []))
        |> canonical_sort()
      end

      assert slots.(&Table.slot(n, &1)) === slots.(&:ets.slot(e, &1))

      # take/2 too, then the keys are gone.
      for k <- keys, do: assert(Table.take(n, k) === :ets.take(e, k))
      assert_all_same(t, keys)
    end

    test "#{type}: a key's position other than first, and big objects" do
      t = pair(unquote(type), keypos: 2)
      big = :binary.copy("x", 70_000)

      for k <- @keys, v <- [1, :a, big, -0.0, 0.0, {k}] do
        both_insert(t, {v, k})
        both_insert(t, {v, k, v})
      end

      for k <- @keys, do: both_insert(t, {big, k, big})
      assert_all_same(t, @keys)
    end
  end

  test "bag identity: floats anywhere, and objects of equal length" do
    t = pair(:bag)

    objects = [
      {1, 0.0},
      {1, -0.0},
      {1, [0.0, 1]},
      {1, [-0.0, 1]},
      {1, {{-0.0}}},
      {1, {{0.0}}},
      {1, %{0.0 => 1}},
      {1, 1, 2},
      {1, 2, 2},
      {1, 2, 1},
      {1, 1.0},
      {1, 1},
      {1, "abcdefgh"},
      {1, "abcdefgi"},
      {1, "bbcdefgh"}
    ]

    for o <- objects ++ Enum.reverse(objects), do: both_insert(t, o)
    assert_all_same(t, [1])
  end
end
