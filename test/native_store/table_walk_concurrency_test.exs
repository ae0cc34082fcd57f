defmodule NativeStore.TableWalkConcurrencyTest do
  @moduledoc """
  `first/1` + `next/2` walks over an `ordered_set` of integer keys while
  another process inserts and deletes keys. Integer walks step from a
  per-thread place and serve copied keys without taking the lock of the
  table's part while its version is unchanged, so this checks what such a walk may
  return against what had surely happened before each call:

    * a key whose deletion had completed before the call started must not
      be returned;
    * a key whose insertion had completed before the call started (and
      that was not deleted) must not be skipped.

  Every write is recorded with a sequence number in `:atomics` after it
  returns; each reader reads the sequence before its call.
  """
  use ExUnit.Case, async: false

  alias NativeStore.Table

  @n 100_000
  @readers 2

  for {label, opts} <- [
        {"", []},
        {" (write_concurrency, parts split meanwhile)", [{:write_concurrency, true}]}
      ] do
    test "next/2 never returns a key deleted before the call nor skips one inserted before it#{label}" do
      run_walks(unquote(opts))
    end
  end

  defp run_walks(opts) do
    t = Table.new(:walk_conc, [:ordered_set, :public, {:read_concurrency, true} | opts])
    for k <- 2..@n//2, do: Table.insert(t, {k, k})

    # With write_concurrency: the key ranges are split before and under
    # the walks.
    me = self()

    splitter =
      if opts != [] do
        assert NativeStore.Nif.table_split_parts(t) == 2

        spawn_link(fn ->
          for _ <- 1..6, do: Process.sleep(5) && NativeStore.Nif.table_split_parts(t)
          send(me, :splitter_done)
        end)
      end

    deleted = :atomics.new(@n + 1, [])
    inserted = :atomics.new(@n + 1, [])
    done = :atomics.new(1, [])
    parent = self()

    # Odd keys are inserted, even keys deleted, in a random order.
    writer =
      spawn_link(fn ->
        1..@n
        |> Enum.shuffle()
        |> Enum.reduce(1, fn k, seq ->
          if rem(k, 2) == 0 do
            Table.delete(t, k)
            :atomics.put(deleted, k, seq)
          else
            Table.insert(t, {k, k})
            :atomics.put(inserted, k, seq)
          end

          :atomics.put(done, 1, seq)
          seq + 1
        end)

        send(parent, :writer_done)
      end)

    readers =
      for _ <- 1..@readers do
        spawn_link(fn ->
          send(parent, {:reader, walk(t, :start, {deleted, inserted, done}, [])})
        end)
      end

    assert_receive :writer_done, 60_000
    if splitter, do: assert_receive(:splitter_done, 60_000)
    violations = for _ <- readers, do: assert_receive({:reader, v}, 60_000) && v
    _ = writer
    assert List.flatten(violations) == []
    assert Table.info(t, :size) == div(@n, 2)
    Table.delete(t)
  end

  # Walks the table over and over until a walk ends after the writer is
  # done; returns the violations seen (at most a few).
  defp walk(t, prev, {deleted, inserted, done} = log, bad) do
    before = :atomics.get(done, 1)
    next = if prev == :start, do: Table.first(t), else: Table.next(t, prev)
    bad = check(prev, next, before, deleted, inserted) ++ bad

    cond do
      length(bad) >= 5 -> bad
      next != :"$end_of_table" -> walk(t, next, log, bad)
      before >= @n -> bad
      true -> walk(t, :start, log, bad)
    end
  end

  defp check(prev, next, before, deleted, inserted) do
    returned_deleted =
      with k when is_integer(k) <- next,
           d when d != 0 and d <= before <- :atomics.get(deleted, k) do
        [{:returned_deleted, prev, k}]
      else
        _ -> []
      end

    lo = if prev == :start, do: 1, else: prev + 1
    hi = if next == :"$end_of_table", do: @n, else: next - 1

    skipped =
      if hi >= lo do
        for k <- lo..hi,
            (i = :atomics.get(inserted, k)) != 0 and i <= before,
            :atomics.get(deleted, k) == 0,
            do: {:skipped, prev, next, k}
      else
        []
      end

    returned_deleted ++ skipped
  end
end
