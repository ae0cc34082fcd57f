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

  import Bitwise

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
  not `1.0`) and with the same external format (on OTP 25 `0.0 === -0.0`,
  and funs made by different processes are `===`: ETS returns what was
  stored, sign of zero and fun creator included), exceptions by module.
  """
  @spec same?(term(), term()) :: boolean()
  def same?({:ok, a}, {:ok, b}),
    do:
      a === b and
        :erlang.term_to_binary(a, [:deterministic]) == :erlang.term_to_binary(b, [:deterministic])

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

  # ------------------------------------------------------------------
  # Shared operations

  @doc """
  The shape of `info(tab, :stats)` (ETS's numbers describe its own hash
  chains, NativeStore's its buckets): `false`, or the tuple with each
  number replaced by its type.
  """
  @spec stats_shape(term()) :: term()
  def stats_shape(false), do: false

  def stats_shape(t) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.map(&number_kind/1) |> List.to_tuple()

  def stats_shape(other), do: {:unexpected, other}

  defp number_kind(n) when is_integer(n) and n >= 0, do: :non_neg_integer
  defp number_kind(n) when is_float(n), do: :float
  defp number_kind(other), do: {:unexpected, other}

  @doc """
  A `first/next` walk of `tab` (module `m`) fixed by `safe_fixtable/2`,
  driven by `{inserts, deletes}`: at step i, the objects `Enum.at(inserts,
  i)` (new keys) are inserted before `next/2`, and the visited key is
  deleted first if it is one of `deletes` (by key, not by step: the walks
  of two hash tables meet keys in different orders). Returns the keys met,
  in order. The table is unfixed after.
  """
  @spec fixed_walk(module(), term(), {[[tuple()]], [term()]}) :: [term()]
  def fixed_walk(m, tab, {inserts, deletes}) do
    m.safe_fixtable(tab, true)

    try do
      fixed_walk_steps(m, tab, m.first(tab), {inserts, deletes}, [])
    after
      m.safe_fixtable(tab, false)
    end
  end

  defp fixed_walk_steps(_m, _tab, :"$end_of_table", _plan, acc), do: Enum.reverse(acc)

  defp fixed_walk_steps(m, tab, k, {inserts, deletes}, acc) do
    {objs, rest} =
      case inserts do
        [step | rest] -> {step, rest}
        [] -> {[], []}
      end

    if objs != [], do: m.insert(tab, objs)
    if Enum.any?(deletes, &(&1 === k)), do: m.delete(tab, k)
    fixed_walk_steps(m, tab, m.next(tab, k), {rest, deletes}, [k | acc])
  end

  @doc """
  A plan for `fixed_walk/3` on a table holding what the `:ets` table `ets`
  holds: at some steps, objects (made by `gen_object.(key)`) with new keys
  (`{:fresh_walk_key, n}`, the same for both tables), and some stored keys
  (at `keypos`) to delete when the walk visits them.
  """
  @spec gen_walk_plan(:ets.tid(), pos_integer(), (term() -> tuple())) :: {[[tuple()]], [term()]}
  def gen_walk_plan(ets, keypos, gen_object) do
    # Sometimes many new keys: fixed shards send what does not fit to
    # overflow tables, walked after them.
    most = if chance(0.1), do: int(5, 30), else: 3

    inserts =
      for _ <- 1..int(0, 120) do
        if chance(0.5),
          do:
            for(
              _ <- 1..int(1, most),
              do: gen_object.({:fresh_walk_key, :erlang.unique_integer([:positive])})
            ),
          else: []
      end

    deletes =
      for obj <- :ets.tab2list(ets) |> canonical_sort(),
          chance(0.15),
          uniq: true,
          do: elem(obj, keypos - 1)

    {inserts, deletes}
  end

  @doc "True for the new keys of a `gen_walk_plan/3` plan."
  @spec fresh_walk_key?(term()) :: boolean()
  def fresh_walk_key?({:fresh_walk_key, _}), do: true
  def fresh_walk_key?(_), do: false

  @doc """
  What a `fixed_walk/3` must agree on in a hash table, whose order is
  unspecified: the keys met other than the ones the walk inserted,
  canonically sorted, and how many keys were met more than once (0).
  """
  @spec fixed_walk_summary([term()]) :: {[term()], non_neg_integer()}
  def fixed_walk_summary(met) do
    {met |> Enum.reject(&fresh_walk_key?/1) |> canonical_sort(),
     length(met) - length(Enum.uniq(met))}
  end

  # ------------------------------------------------------------------
  # Keys kept in the VM's external term format

  @doc """
  A closure capturing `x` (the same fun whoever calls this, so closures made
  by different processes are `=:=` when their captured values are).
  """
  @spec closure(term()) :: (() -> term())
  def closure(x), do: fn -> x end

  @doc "A two-argument closure capturing `x` and `y`."
  @spec closure2(term(), term()) :: (term() -> term())
  def closure2(x, y), do: fn z -> {x, y, z} end

  @doc """
  Groups of keys that NativeStore keeps in external term format, each group
  a list of terms that are one key in ETS on OTP 25 (`=:=`) but are made
  differently: closures made here and by a helper process (their creator
  pid differs) capturing `0.0` or `-0.0` at any depth, export funs,
  references, ports, pids, tuples nested deeper than 64 levels holding
  `-0.0`/`0.0`, bit strings and big integers. Draws nothing from `:rand`
  (a seed's stream is the same with or without it); call once per seed.
  """
  @spec ext_key_groups() :: [[term(), ...], ...]
  def ext_key_groups do
    nz = -0.0
    pz = 0.0

    captured = [
      {nz, pz},
      {{nz, [1.5, nz]}, {pz, [1.5, pz]}},
      {%{a: nz, b: [nz | pz]}, %{a: pz, b: [pz | nz]}},
      {deep(3, [nz]), deep(3, [pz])},
      {deep(70, nz), deep(70, pz)},
      {1, 1},
      {1 <<< 100, (1 <<< 100) - 1 + 1}
    ]

    me = self()
    tag = make_ref()

    helper =
      spawn(fn ->
        made =
          for {n, p} <- captured do
            {closure(n), closure(p), closure2(n, "b"), closure2(p, "b")}
          end

        send(me, {tag, made, self()})
        receive do: (:stop -> :ok)
      end)

    {theirs, helper_pid} = receive do: ({^tag, made, pid} -> {made, pid})
    send(helper, :stop)

    fun_groups =
      Enum.zip(captured, theirs)
      |> Enum.flat_map(fn {{n, p}, {tn, tp, tn2, tp2}} ->
        [[closure(n), closure(p), tn, tp], [closure2(n, "b"), closure2(p, "b"), tn2, tp2]]
      end)

    ref = make_ref()
    port = hd(Port.list())
    bits = <<1::3>>
    <<_::5, sliced::bitstring>> = <<7::5, 1::3>>
    [{tf_neg, _, _, _} | _] = theirs

    fun_groups ++
      [
        [&Enum.map/2, Function.capture(Enum, :map, 2)],
        [ref, :erlang.binary_to_term(:erlang.term_to_binary(ref))],
        [port],
        [self(), helper_pid],
        [deep(70, nz), deep(70, pz)],
        [deep(66, {pz, closure(nz)}), deep(66, {nz, tf_neg})],
        [deep(65, [nz | %{a: pz}]), deep(65, [pz | %{a: nz}])],
        [deep(70, %{a: nz, b: bits}), deep(70, %{a: pz, b: sliced})],
        [bits, sliced, <<0::1, 0::1, 1::1>>],
        [<<255, 1::1>>],
        [{bits, nz}, {sliced, pz}],
        [1 <<< 100, (1 <<< 100) + 1 - 1],
        [-(1 <<< 90)],
        [{1 <<< 100, nz}, {1 <<< 100, pz}],
        [{ref, port, &Enum.map/2}, {ref, port, Function.capture(Enum, :map, 2)}],
        [deep(70, {ref, self(), port}), deep(70, {ref, self(), port})]
      ]
  end

  @doc """
  `leaf` nested in `n` one-element tuples (the tests use 70 levels, deeper
  than 64).
  """
  @spec deep(non_neg_integer(), term()) :: term()
  def deep(0, leaf), do: leaf
  def deep(n, leaf), do: {deep(n - 1, leaf)}
end
