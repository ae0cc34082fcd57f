defmodule NativeStore.NifFuzzTest do
  @moduledoc """
  Every NIF of `NativeStore.Nif`, called directly (below the Elixir
  wrappers' guards) with random arguments drawn from a pool of awkward
  terms: each call returns or raises `ArgumentError`, nothing else, and the
  VM survives. Replay one run with `SEED=n`.
  """
  use ExUnit.Case, async: false

  import Bitwise
  alias NativeStore.Table

  @calls_per_nif 150

  defp pool(registry) do
    t = Table.new(:nif_fuzz, [:public])
    Table.insert(t, {1, 2})
    o = Table.new(:nif_fuzz_ord, [:ordered_set, :public])
    Table.insert(o, [{1, 2}, {2.0, 3}])
    b = Table.new(:nif_fuzz_bag, [:bag, :public])
    Table.insert(b, [{1, 2}, {1, 3}])

    [t, o, b, registry, :nif_fuzz_unknown, make_ref(), self(), 0, -1, 1 <<< 70, -(1 <<< 70)] ++
      [2000, 1.5, -0.0, "bin", <<1::3>>, [], [1, 2], [1 | 2], {}, {1}, {1, 2}, {1, 2, 3}] ++
      [%{}, %{a: 1}, :atom, nil, true, fn -> 1 end, [{:_, [], [true]}]] ++
      [[{{:"$1", :_}, [], [:"$1"]}], {1, :_}, String.duplicate("x", 1000), Enum.to_list(1..50)]
  end

  test "every NIF returns or raises ArgumentError on random arguments" do
    seed = String.to_integer(System.get_env("SEED", "#{:erlang.unique_integer([:positive])}"))
    :rand.seed(:exsss, {seed, 17, 29})
    registry = :nif_fuzz_registry
    start_supervised!({NativeStore.Registry, keys: :unique, name: registry})

    nifs =
      NativeStore.Nif.__info__(:functions)
      |> Enum.reject(fn {name, _} -> name == :load_nif end)

    assert length(nifs) > 40

    failures =
      for {name, arity} <- nifs, _ <- 1..@calls_per_nif, reduce: [] do
        acc ->
          args = for _ <- 1..arity//1, do: Enum.random(pool(registry))

          try do
            apply(NativeStore.Nif, name, args)
            acc
          rescue
            ArgumentError -> acc
            e -> [{name, args, e.__struct__} | acc]
          catch
            kind, value -> [{name, args, {kind, value}} | acc]
          end
      end

    assert failures == [], "seed #{seed}: #{inspect(Enum.take(failures, 5), limit: 8)}"
  end
end
