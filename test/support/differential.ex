defmodule NativeStore.Test.Differential do
  @moduledoc """
  Shared plumbing of the differential tests, which run the same random
  operations on an `:ets` table (the oracle) and on a `NativeStore.Table`
  and require every result, and every raised exception module, to agree:

    * `test/native_store/table_differential_test.exs` (`:set`)
    * `test/native_store/table_types_differential_test.exs` (`:ordered_set`,
      `:bag`, `:duplicate_bag`)
    * `test/native_store/table_select_test.exs` (match specs, selects, folds)

  What lives here is what those files share verbatim: the environment knobs,
  the exception-catching runner and its comparison, the canonical sort and
  the `:rand` primitives the generators are built from.

  What stays in each test file on purpose: the `:rand.seed/2` formula, the
  key pools, `rand_term/1` and the operation generators. They differ per
  file (each aims at its own table types and operations), and a seed only
  replays the same failing case as long as every one of them draws from
  `:rand` in exactly the same order. Changing a pool's contents or order
  changes what every seed generates.

  ## Knobs (environment variables)

    * `SEED` - run only that seed (a replay);
    * `SEEDS` - number of seeds, `1..SEEDS` (each file has its own default);
    * `OPS` - random operations per seed (each file has its own default).

  Every random primitive below draws from the process's `:rand` state, which
  the tests seed per seed.
  """

  # ------------------------------------------------------------------
  # Knobs

  @doc """
  The seeds to run: `[SEED]` if `SEED` is set, else `1..SEEDS` as a list,
  with `default` seeds if `SEEDS` is not set either.
  """
  @spec seeds(pos_integer()) :: [integer()]
  def seeds(default) do
    case System.get_env("SEED") do
      s when s in [nil, ""] ->
        Enum.to_list(1..String.to_integer(System.get_env("SEEDS") || Integer.to_string(default)))

      s ->
        [String.to_integer(s)]
    end
  end

  @doc "True when `SEED` is set: a single-seed replay, not a full run."
  @spec single_seed?() :: boolean()
  def single_seed?, do: System.get_env("SEED") not in [nil, ""]

  @doc "Random operations per seed: `OPS`, or `default`."
  @spec ops_per_seed(pos_integer()) :: pos_integer()
  def ops_per_seed(default),
    do: String.to_integer(System.get_env("OPS") || Integer.to_string(default))

  @doc """
  True when the environment variable `name` is set to anything but `""` or
  `"0"` (e.g. `KNOWN_BUGS=1`).
  """
  @spec env_flag?(String.t()) :: boolean()
  def env_flag?(name), do: System.get_env(name) not in [nil, "", "0"]

  # ------------------------------------------------------------------
  # Running and comparing

  @doc """
  Runs `fun`: `{:ok, result}`, or `{:raise, module}` with the module of the
  exception it raised (Erlang errors normalised as by `rescue`, so `:badarg`
  is `ArgumentError`). Throws and exits are not caught.
  """
  @spec outcome((() -> term())) :: {:ok, term()} | {:raise, module()}
  def outcome(fun) do
    {:ok, fun.()}
  rescue
    e -> {:raise, e.__struct__}
  end

  @doc """
  Whether two `outcome/1` results agree: results exactly (`===`, so `1` is
  not `1.0` and `0.0` is not `-0.0`), exceptions by module.
  """
  @spec same?(term(), term()) :: boolean()
  def same?({:ok, a}, {:ok, b}), do: a === b
  def same?({:raise, a}, {:raise, b}), do: a == b
  def same?(_, _), do: false

  @doc """
  Sorts a list into a total order on distinct terms: term order, then the
  external format (which tells `1` from `1.0` and `0.0` from `-0.0`, equal in
  term order). Used to compare results whose order is unspecified.
  """
  @spec canonical_sort(list()) :: list()
  def canonical_sort(list), do: Enum.sort_by(list, &{&1, :erlang.term_to_binary(&1)})

  # ------------------------------------------------------------------
  # Random primitives

  @doc "A uniformly random element of the non-empty `list`."
  @spec pick([term(), ...]) :: term()
  def pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)

  @doc "True with probability `p`."
  @spec chance(float()) :: boolean()
  def chance(p), do: :rand.uniform() < p

  @doc "A uniformly random integer in `lo..hi` (inclusive)."
  @spec int(integer(), integer()) :: integer()
  def int(lo, hi), do: lo + :rand.uniform(hi - lo + 1) - 1

  @doc """
  A weighted choice from `[{weight, value}]` (weights are non-negative
  integers, at least one positive): `value` with probability `weight / sum`.
  Values are evaluated before the choice; pass funs to generate lazily.
  """
  @spec weighted([{non_neg_integer(), term()}, ...]) :: term()
  def weighted(pairs) do
    total = pairs |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    r = :rand.uniform(total)

    Enum.reduce_while(pairs, r, fn {w, v}, acc ->
      if acc <= w, do: {:halt, {:picked, v}}, else: {:cont, acc - w}
    end)
    |> then(fn {:picked, v} -> v end)
  end

  @doc """
  A random object with `key` at `keypos`: between `keypos` and
  `keypos + max_extra` elements, the others from `value.()`.
  """
  @spec object(pos_integer(), term(), non_neg_integer(), (() -> term())) :: tuple()
  def object(keypos, key, max_extra, value) do
    arity = int(max(keypos, 1), keypos + max_extra)

    for(i <- 1..arity, do: if(i == keypos, do: key, else: value.()))
    |> List.to_tuple()
  end

  @doc """
  `objects` without the ones whose key (at `keypos`) `same_key?` finds
  among the earlier ones: ETS leaves undefined which of several objects with
  one key a list insert keeps in a set or an ordered_set. Malformed objects
  are kept.
  """
  @spec distinct_keys([term()], pos_integer(), (term(), term() -> boolean())) :: [term()]
  def distinct_keys(objects, keypos, same_key?) do
    objects
    |> Enum.reduce({[], []}, fn o, {kept, keys} ->
      if is_tuple(o) and tuple_size(o) >= keypos do
        k = elem(o, keypos - 1)

        if Enum.any?(keys, &same_key?.(&1, k)),
          do: {kept, keys},
          else: {[o | kept], [k | keys]}
      else
        {[o | kept], keys}
      end
    end)
    |> elem(0)
    |> Enum.reverse()
  end

  @doc """
  `leaf` nested in `n` one-element tuples (the tests use 70 levels, deeper
  than 64).
  """
  @spec deep(non_neg_integer(), term()) :: term()
  def deep(0, leaf), do: leaf
  def deep(n, leaf), do: {deep(n - 1, leaf)}
end
