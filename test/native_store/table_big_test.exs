defmodule NativeStore.TableBigTest do
  @moduledoc "A 200k-entry table against :ets: tab2list, memory, size."
  use ExUnit.Case, async: true

  alias NativeStore.Table

  @n 200_000

  test "tab2list of a 200k-entry table equals :ets's (sorted)" do
    e = :ets.new(:big, [:public])
    t = Table.new(:big, [:public])

    objs =
      for i <- 1..@n do
        case rem(i, 4) do
          0 -> {i, i * 2}
          1 -> {Integer.to_string(i), %{n: i}, :x}
          2 -> {{:tuple, i}, [i, i + 1], "v"}
          3 -> {i * 1.0, <<i::32>>}
        end
      end

    :ets.insert(e, objs)
    assert Table.insert(t, objs)
    assert Table.info(t, :size) == @n
    assert Table.info(t, :size) == :ets.info(e, :size)

    mem = Table.info(t, :memory)
    assert is_integer(mem) and mem > 0
    # Memory is in words and must at least hold the keys.
    assert mem * :erlang.system_info(:wordsize) > @n * 8

    sorted = fn list -> Enum.sort_by(list, &{&1, :erlang.term_to_binary(&1)}) end
    assert sorted.(Table.tab2list(t)) == sorted.(:ets.tab2list(e))

    # And after deleting half, still equal.
    for i <- 1..@n, rem(i, 2) == 0 do
      key = elem(Enum.at([{i, 0}], 0), 0)
      key = if rem(i, 4) == 2, do: {:tuple, i}, else: key
      :ets.delete(e, key)
      Table.delete(t, key)
    end

    assert Table.info(t, :size) == :ets.info(e, :size)
    assert sorted.(Table.tab2list(t)) == sorted.(:ets.tab2list(e))
    assert Table.delete_all_objects(t)
    assert Table.tab2list(t) == []
    assert Table.info(t, :memory) |> is_integer()
  end
end
