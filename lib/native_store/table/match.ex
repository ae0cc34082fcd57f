defmodule NativeStore.Table.Match do
  @moduledoc false
  # Match specifications, selects and folds of `NativeStore.Table`.
  #
  # OTP's own match-spec engine does the matching: a spec is compiled once
  # with `:ets.match_spec_compile/1` (cached per process) and run over the
  # objects with `:ets.match_spec_run_r/3`, the BIF behind
  # `:ets.match_spec_run/2` (it yields by itself every 4000 objects and
  # prepends its results reversed onto an accumulator, which lets a scan
  # build its result with a single reverse at the end).
  #
  # Where the objects come from:
  #
  #   * when every clause's head binds the key (no variable and no `:_` in
  #     the key position), the objects are the `lookup/2` of those keys,
  #     and the table is not scanned at all;
  #   * otherwise the table is scanned chunk by chunk (`table_to_list/1`,
  #     then `cursor_next/2`, about 2000 objects a call), so no normal
  #     scheduler is ever held for long.
  #
  # Continuations of `select/3` hold the compiled spec, the results not yet
  # returned, and the traversal's position: a plain term (the table id and a
  # shard/bucket or the last key), so a continuation can be used again (it
  # continues from the same place each time, as in ETS), copied, and passed
  # through `term_to_binary/1`.

  import Bitwise, only: [<<<: 2]

  alias NativeStore.{Nif, Table}

  @end_of_table :"$end_of_table"
  @cont_tag :"$native_store_select"
  @cache_key {__MODULE__, :compiled}
  @cache_max 32
  @chunks_key {__MODULE__, :chunks}
  @meta_key {__MODULE__, :meta}
  @last_key {__MODULE__, :last}
  @limited_key {__MODULE__, :limited}
  # Objects a walk's NIF call copies at most (`CHUNK` in `table.rs`).
  @chunk 2000

  # ------------------------------------------------------------------
  # select

  def select(tab, spec) do
    case plan(tab, spec) do
      :empty -> []
      {:keys, ms, meta, keys} -> run(lookup_keys(tab, meta, keys), ms)
      {:scan, ms, _meta} -> scan_results(tab, ms, :forward, prefilter(spec))
    end
  end

  def select(tab, spec, limit) do
    check_limit(limit)
    select_limited(tab, spec, limit, :forward)
  end

  def select({@cont_tag, tab, ms, limit, buffer, source})
      when is_list(buffer) and is_integer(limit) and limit > 0 do
    {tab, source} = rebind(tab, buffer, source)
    check_readable_now(table_of(tab))

    case source do
      :hash_keys -> keys_page(tab, ms, limit, buffer, false)
      _ -> step(tab, ms, limit, buffer, source)
    end
  end

  def select(@end_of_table), do: @end_of_table
  def select(other), do: bad_continuation(other)

  def select_reverse(tab, spec) do
    case plan(tab, spec) do
      :empty ->
        []

      {:keys, ms, {_kp, type} = meta, keys} ->
        results = run(lookup_keys(tab, meta, keys), ms)
        if type == :ordered_set, do: :lists.reverse(results), else: results

      {:scan, ms, {_kp, :ordered_set}} ->
        scan_results(tab, ms, :backward, prefilter(spec))

      {:scan, ms, _meta} ->
        scan_results(tab, ms, :forward, prefilter(spec))
    end
  end

  def select_reverse(tab, spec, limit) do
    check_limit(limit)
    select_limited(tab, spec, limit, :reverse)
  end

  def select_reverse(cont), do: select(cont)

  defp select_limited(tab, spec, limit, direction) do
    case limited_plan(tab, spec) do
      :empty ->
        @end_of_table

      {:keys, ms, {_kp, :ordered_set} = meta, keys} ->
        results = run(lookup_keys(tab, meta, keys), ms)
        results = if direction == :reverse, do: :lists.reverse(results), else: results
        # One key: ETS looks it up and knows the end; several: it walks the
        # range between them, and a full batch comes with a continuation.
        source = if match?([_], keys |> Enum.sort() |> dedup_equal()), do: :keys, else: :done
        step(tab, ms, limit, results, source)

      {:keys, ms, meta, keys} ->
        keys_page(tab, ms, limit, run(lookup_keys(tab, meta, keys), ms), true)

      {:scan, ms, {_kp, :ordered_set}, filter} when direction == :reverse ->
        # A cursor walking down from the greatest key: `limit` results
        # cost about `limit` objects, not a scan of the table.
        {chunk, source} = first_chunk(tab, :backward, limit, filter)
        first_fill(tab, ms, limit, chunk, with_filter(source, filter))

      {:scan, ms, _meta, filter} ->
        {chunk, source} = first_chunk(tab, :forward, limit, filter)
        first_fill(tab, ms, limit, chunk, with_filter(source, filter))
    end
  end

  # A cursor of `select/3` keeps its pre-filter for the chunks after.
  defp with_filter({:cursor, cursor}, filter) when filter != nil,
    do: {:cursor, cursor, filter}

  defp with_filter(source, _filter), do: source

  # `step/5` of the results of a walk's first chunk, from the reversed
  # results as the match-spec run gives them (`fill/6` reverses them once).
  defp first_fill(tab, ms, limit, chunk, source) do
    rev = :ets.match_spec_run_r(chunk, ms, [])
    fill(tab, ms, limit, rev, length(rev), source)
  end

  # The results of looked-up keys of a hash table, paged as ETS pages them
  # (erl_db_hash.c): all results first (keys in reverse order of their first
  # clause, each key's objects in insertion order); a call returns the last
  # `limit` of them and keeps the others for the continuation, which keeps
  # them reversed; the last page comes with `:"$end_of_table"`.
  defp keys_page(_tab, _ms, _limit, [], _first?), do: @end_of_table

  defp keys_page(tab, ms, limit, results, first?) do
    case length(results) - limit do
      over when over <= 0 ->
        {results, @end_of_table}

      over ->
        {rest, page} = Enum.split(results, over)
        rest = if first?, do: rest, else: :lists.reverse(rest)
        {page, {@cont_tag, named(tab), ms, limit, rest, :hash_keys}}
    end
  end

  # Returns `limit` results from `buffer` (results not yet returned, in
  # order), pulling more chunks from the cursor while there are too few.
  # As in ETS, a full batch always comes with a continuation (the next call
  # may find nothing), a short one ends the traversal.
  defp step(tab, ms, limit, buffer, source) do
    case take(buffer, limit, []) do
      # Looked-up keys: the end is known (as ETS knows it).
      {taken, []} when source == :keys ->
        {taken, @end_of_table}

      {taken, rest} ->
        {taken, {@cont_tag, named(tab), ms, limit, rest, source}}

      :short ->
        fill(tab, ms, limit, :lists.reverse(buffer), length(buffer), source)
    end
  end

  defp fill(tab, ms, limit, rev, count, {:cursor, cursor}) when count < limit do
    {chunk, source} = next_chunk(cursor)
    results = run(chunk, ms)
    fill(tab, ms, limit, :lists.reverse(results, rev), count + length(results), source)
  end

  defp fill(tab, ms, limit, rev, count, {:cursor, cursor, filter}) when count < limit do
    {chunk, source} = next_chunk(cursor, if(small_chunk?(cursor), do: nil, else: filter))
    results = run(chunk, ms)
    source = with_filter(source, filter)
    fill(tab, ms, limit, :lists.reverse(results, rev), count + length(results), source)
  end

  defp fill(_tab, _ms, _limit, [], _count, source) when source in [:done, :keys],
    do: @end_of_table

  defp fill(_tab, _ms, limit, rev, count, source) when count < limit and source in [:done, :keys],
    do: {:lists.reverse(rev), @end_of_table}

  # Exactly a batch (the usual first chunk of `select/3`): as `step/5`
  # would return it.
  defp fill(tab, ms, limit, rev, limit, source) when source != :keys,
    do: {:lists.reverse(rev), {@cont_tag, named(tab), ms, limit, [], source}}

  defp fill(tab, ms, limit, rev, count, source) when count >= limit,
    do: step(tab, ms, limit, :lists.reverse(rev), source)

  # (A forged continuation.)
  defp fill(_tab, _ms, _limit, _rev, _count, source), do: bad_continuation(source)

  # A chunk of fewer objects than this is taken without the scan's
  # pre-filter: passing the filter costs each call ~150 ns (a `select/3`
  # with a limit of 10 ran ~1.5x slower with it); the chunks after it
  # double and use it.
  @filter_min_chunk 64

  defp small_chunk?({_tid, _at, _in, size}) when is_integer(size), do: size < @filter_min_chunk
  defp small_chunk?(_cursor), do: false

  defp take(list, 0, acc), do: {:lists.reverse(acc), list}
  defp take([h | t], n, acc), do: take(t, n - 1, [h | acc])
  defp take([], _n, _acc), do: :short
  # (The improper buffer of a forged continuation.)
  defp take(other, _n, _acc), do: bad_continuation(other)

  # As ETS: a positive small integer (a bignum limit is an error).
  @max_limit (1 <<< 59) - 1
  defp check_limit(limit) when is_integer(limit) and limit > 0 and limit <= @max_limit, do: :ok

  defp check_limit(limit),
    do: raise(ArgumentError, "expected a positive integer limit, got: #{inspect(limit)}")

  defp bad_continuation(other),
    do: raise(ArgumentError, "invalid select continuation: #{inspect(other)}")

  # ------------------------------------------------------------------
  # select_count, select_delete, select_replace

  def select_count(tab, spec) do
    case plan(tab, spec) do
      :empty ->
        0

      {:keys, ms, meta, keys} ->
        count_true(run(lookup_keys(tab, meta, keys), ms), 0)

      {:scan, ms, _meta} ->
        count = fn chunk, n -> count_true(run(chunk, ms), n) end
        fold_chunks(tab, 0, count, :forward, prefilter(spec))
    end
  end

  defp count_true([true | t], n), do: count_true(t, n + 1)
  defp count_true([_ | t], n), do: count_true(t, n)
  defp count_true([], n), do: n

  def select_delete(tab, spec) do
    {kp, type} = meta = meta!(tab)
    check_writable(tab, kp)
    # Each clause returns {object, result}: the objects whose result is
    # `true` are deleted, each only if it is still the one that matched.
    case plan(tab, with_objects(spec), meta) do
      :empty ->
        0

      {:keys, ms, meta, keys} ->
        delete_matched(tab, type, kp, run(lookup_keys(tab, meta, keys), ms), 0)

      {:scan, ms, _meta} ->
        delete = fn chunk, n -> delete_matched(tab, type, kp, run(chunk, ms), n) end
        fold_chunks(tab, 0, delete, :forward, prefilter(spec))
    end
  end

  defp delete_matched(tab, type, kp, [{obj, true} | t], n) when type in [:set, :ordered_set] do
    n = if Table.replace(tab, :erlang.element(kp, obj), [obj], []), do: n + 1, else: n
    delete_matched(tab, type, kp, t, n)
  end

  # Bags: the matched object goes, with its exact copies (not with objects
  # only `=:=` to it: a `0.0` in the spec does not match `-0.0`).
  defp delete_matched(tab, type, kp, [{obj, true} | t], n) do
    Nif.table_delete_object_exact(tab, obj)
    delete_matched(tab, type, kp, t, n + 1)
  end

  defp delete_matched(tab, type, kp, [_ | t], n), do: delete_matched(tab, type, kp, t, n)
  defp delete_matched(_tab, _type, _kp, [], n), do: n

  def select_replace(tab, spec) do
    {kp, type} = meta = meta!(tab)
    check_writable(tab, kp)

    if type == :bag do
      raise ArgumentError, "select_replace/2 is not supported on :bag tables (as in ETS)"
    end

    if not keeps_key_all?(spec, kp) do
      raise ArgumentError,
            "select_replace/2 expects a match specification that keeps the key, got: " <>
              inspect(spec)
    end

    case plan(tab, with_objects(spec), meta) do
      :empty ->
        0

      {:keys, ms, meta, keys} when type == :duplicate_bag ->
        replace_in_bag(tab, kp, ms, run(lookup_keys(tab, meta, keys), ms), {0, %{}}) |> elem(0)

      {:keys, ms, meta, keys} ->
        replace_matched(tab, kp, run(lookup_keys(tab, meta, keys), ms), 0)

      {:scan, ms, _meta} when type == :duplicate_bag ->
        replace = &replace_in_bag(tab, kp, ms, run(&1, ms), &2)
        fold_chunks(tab, {0, %{}}, replace, :forward, prefilter(spec)) |> elem(0)

      {:scan, ms, _meta} ->
        replace = fn chunk, n -> replace_matched(tab, kp, run(chunk, ms), n) end
        fold_chunks(tab, 0, replace, :forward, prefilter(spec))
    end
  end

  # duplicate_bag: every object of a key that has a match is replaced in
  # place (ETS keeps the position), all the key's objects at once: read,
  # rewritten, and swapped in atomically if the objects read are still the
  # key's first ones (objects inserted meanwhile stay after them; else
  # read again). `done` holds the keys already rewritten (a key's objects
  # may span two chunks).
  defp replace_in_bag(tab, kp, ms, [{obj, new} | t], {n, done})
       when is_tuple(new) and tuple_size(new) >= kp and
              :erlang.element(kp, new) === :erlang.element(kp, obj) and
              not is_map_key(done, :erlang.element(kp, obj)) do
    key = :erlang.element(kp, obj)
    replaced = replace_key_in_bag(tab, kp, ms, key)
    replace_in_bag(tab, kp, ms, t, {n + replaced, Map.put(done, key, true)})
  end

  defp replace_in_bag(tab, kp, ms, [_ | t], acc), do: replace_in_bag(tab, kp, ms, t, acc)
  defp replace_in_bag(_tab, _kp, _ms, [], acc), do: acc

  defp replace_key_in_bag(tab, kp, ms, key) do
    case Table.lookup(tab, key) do
      [] ->
        0

      objs ->
        {new, replaced} =
          Enum.map_reduce(objs, 0, fn o, r ->
            case run([o], ms) do
              [{^o, new}]
              when is_tuple(new) and tuple_size(new) >= kp and
                     :erlang.element(kp, new) === key ->
                {new, r + 1}

              _ ->
                {o, r}
            end
          end)

        cond do
          replaced == 0 -> 0
          Nif.table_swap_objects(tab, key, objs, new) -> replaced
          true -> replace_key_in_bag(tab, kp, ms, key)
        end
    end
  end

  defp replace_matched(tab, kp, [{obj, new} | t], n)
       when is_tuple(new) and tuple_size(new) >= kp and
              :erlang.element(kp, new) === :erlang.element(kp, obj) do
    n = if Table.replace(tab, :erlang.element(kp, obj), [obj], [new]), do: n + 1, else: n
    replace_matched(tab, kp, t, n)
  end

  defp replace_matched(tab, kp, [_ | t], n), do: replace_matched(tab, kp, t, n)
  defp replace_matched(_tab, _kp, [], n), do: n

  # The static check of ETS: the body must be a single term that is
  # `:"$_"`, `{:element, keypos, :"$_"}`-keyed, or a tuple construction
  # `{{...}}` whose key element rebuilds the head's key: the same variables
  # and literals in the same tuples and lists, ground parts possibly as
  # `{:const, term}`. `:_` and maps in the head's key never qualify (derived
  # from OTP 25's behaviour, checked by the differential test).
  defp keeps_key_all?([clause | t], kp), do: keeps_key?(clause, kp) and keeps_key_all?(t, kp)
  # Not a proper list: the compiler rejects it.
  defp keeps_key_all?(_, _kp), do: true

  defp keeps_key?({_head, _guards, [:"$_"]}, _kp), do: true

  defp keeps_key?({head, _guards, [{new}]}, kp) when is_tuple(new) and tuple_size(new) >= kp do
    case :erlang.element(kp, new) do
      {:element, ^kp, :"$_"} ->
        true

      new_key ->
        is_tuple(head) and tuple_size(head) >= kp and
          rebuilds?(:erlang.element(kp, head), new_key)
    end
  end

  defp keeps_key?(_clause, _kp), do: false

  # Does the body expression `b` rebuild the head pattern `h` exactly?
  defp rebuilds?(:_, _b), do: false
  defp rebuilds?(h, _b) when is_map(h), do: false
  defp rebuilds?(h, {:const, c}), do: c === h and constant?(h)

  defp rebuilds?(h, {b}) when is_tuple(h) and is_tuple(b) and tuple_size(h) == tuple_size(b),
    do: rebuilds_list?(Tuple.to_list(h), Tuple.to_list(b))

  defp rebuilds?(h, _b) when is_tuple(h), do: false
  defp rebuilds?([hh | ht], [bh | bt]), do: rebuilds?(hh, bh) and rebuilds?(ht, bt)
  defp rebuilds?([_ | _], _b), do: false
  defp rebuilds?(h, b), do: h === b

  defp rebuilds_list?([h | ht], [b | bt]), do: rebuilds?(h, b) and rebuilds_list?(ht, bt)
  defp rebuilds_list?([], []), do: true

  # Ground and map-free.
  defp constant?(t) when is_map(t), do: false
  defp constant?(t) when is_tuple(t), do: t |> Tuple.to_list() |> constant?()
  defp constant?([h | t]), do: constant?(h) and constant?(t)
  defp constant?(t), do: ground?(t)

  # Rewrites every clause to return `{object, result}`: the body's last
  # expression is paired with `:"$_"` (earlier expressions stay, so a
  # failing body still fails the same way).
  defp with_objects(spec) when is_list(spec) do
    Enum.map(spec, fn
      {head, guards, body} when is_list(body) and body != [] ->
        {init, [last]} = Enum.split(body, -1)
        {head, guards, init ++ [{{:"$_", last}}]}

      other ->
        other
    end)
  catch
    # An improper list: left for the compiler to reject.
    _, _ -> spec
  end

  defp with_objects(spec), do: spec

  defp check_writable(tab, kp) do
    # A no-op write (deleting an object that cannot be stored) checks write
    # access even when nothing matches, as ETS does.
    Table.delete_object(tab, :erlang.make_tuple(kp, make_ref()))
  end

  # ------------------------------------------------------------------
  # match, match_object, match_delete

  def match(tab, pattern), do: select(tab, [{pattern, [], [:"$$"]}])
  def match(tab, pattern, limit), do: select(tab, [{pattern, [], [:"$$"]}], limit)
  def match(cont), do: select(cont)

  def match_object(tab, pattern), do: select(tab, [{pattern, [], [:"$_"]}])
  def match_object(tab, pattern, limit), do: select(tab, [{pattern, [], [:"$_"]}], limit)
  def match_object(cont), do: select(cont)

  def match_delete(tab, pattern) do
    select_delete(tab, [{pattern, [], [true]}])
    true
  end

  # ------------------------------------------------------------------
  # Folds

  def foldl(fun, acc, tab) do
    fold_chunks(tab, acc, fn chunk, acc -> fold_list(fun, acc, chunk) end)
  end

  def foldr(fun, acc, tab) do
    walk =
      case meta!(tab) do
        # Chunks walked down from the greatest key, each in descending order.
        {_kp, :ordered_set} -> :backward
        _ -> :forward
      end

    fold_chunks(tab, acc, fn chunk, acc -> fold_list(fun, acc, chunk) end, walk)
  end

  # `:lists.foldl/3` only over objects: like ETS's folds, an empty table
  # returns `acc` whatever `fun` is.
  defp fold_list(_fun, acc, []), do: acc
  defp fold_list(fun, acc, list), do: :lists.foldl(fun, acc, list)

  # ------------------------------------------------------------------
  # Plans: compiled spec, table meta and where the objects come from

  # The last spec of the common case below (one clause binding a hash
  # table's key), used again on the same table reference with another key:
  # its compiled spec and the table's meta come from one
  # process-dictionary read.
  defp plan(tab, [{head, guards, body}] = spec) when is_reference(tab) and is_tuple(head) do
    case :erlang.get(@last_key) do
      {any_key_head, ^guards, ^body, kp, type, ms, nil, ^tab} when tuple_size(head) >= kp ->
        key = :erlang.element(kp, head)

        if plain?(key) and :erlang.setelement(kp, head, :_) === any_key_head,
          do: {:keys, ms, {kp, type}, [key]},
          else: plan(tab, spec, meta!(tab))

      _ ->
        plan(tab, spec, meta!(tab))
    end
  end

  defp plan(tab, spec), do: plan(tab, spec, meta!(tab))

  # `plan/2` for `select/3` and `select_reverse/3`, whose callers tend to
  # repeat one spec on one table (paging through it): the last plan of a
  # table reference is kept and found with one process-dictionary read,
  # instead of the table's meta and the compiled spec (two reads and two
  # map lookups). Only plans without a side effect are kept (`:empty` and
  # `{:keys, _, _, []}` check the table's access on each call); a spec
  # holding a zero float is compared by its encoding, as in `cached/3`.
  defp limited_plan(tab, spec) when is_reference(tab) do
    case :erlang.get(@limited_key) do
      {^tab, ^spec, planned, nil} ->
        planned

      {^tab, ^spec, planned, exact} ->
        if exact == :erlang.term_to_binary(spec), do: planned, else: keep_plan(tab, spec)

      _ ->
        keep_plan(tab, spec)
    end
  end

  defp limited_plan(tab, spec), do: tab |> plan(spec) |> with_limited_filter(spec)

  # A scan's plan for `select/3` carries its pre-filter.
  defp with_limited_filter({:scan, ms, meta}, spec), do: {:scan, ms, meta, limited_filter(spec)}
  defp with_limited_filter(planned, _spec), do: planned

  # The pre-filter of a `select/3` scan, when some clause has a condition
  # beyond the arity (that one rarely leaves an object out, and a filter
  # costs each chunk's call its decoding).
  defp limited_filter(spec) do
    filter = prefilter(spec)

    if filter != nil and Enum.any?(filter, fn {_arity, eq, cmp} -> eq != [] or cmp != [] end),
      do: filter
  end

  defp keep_plan(tab, spec) do
    # (With a scan's pre-filter: computing it costs microseconds.)
    case tab |> plan(spec) |> with_limited_filter(spec) do
      {:scan, _ms, _meta, _filter} = planned ->
        :erlang.put(@limited_key, {tab, spec, planned, exact_key(spec)})
        planned

      {:keys, _ms, _meta, [_ | _]} = planned ->
        :erlang.put(@limited_key, {tab, spec, planned, exact_key(spec)})
        planned

      planned ->
        planned
    end
  end

  defp plan(tab, [], _meta) do
    # ETS accepts the empty spec (it matches nothing); the compiler does not.
    check_readable_now(tab)
    :empty
  end

  # The common case, one clause whose head binds the key of a hash table to
  # a plain term: the objects looked up for that key all have it (their key
  # is `=:=` to it and contains no float, so the head's key always matches
  # them), so the spec is compiled with `:_` in the key position and cached
  # once for every key. The last such spec is kept apart and checked first.
  defp plan(tab, [{head, guards, body}] = spec, {kp, type} = meta)
       when type != :ordered_set and is_tuple(head) and tuple_size(head) >= kp do
    key = :erlang.element(kp, head)

    if plain?(key) do
      case compile_any_key(:erlang.setelement(kp, head, :_), guards, body, meta, tab) do
        :error -> plan_compiled(spec, meta)
        ms -> {:keys, ms, meta, [key]}
      end
    else
      plan_compiled(spec, meta)
    end
  end

  defp plan(tab, spec, meta) do
    case plan_compiled(spec, meta) do
      {:keys, ms, meta, []} ->
        check_readable_now(tab)
        {:keys, ms, meta, []}

      planned ->
        planned
    end
  end

  defp plan_compiled(spec, {kp, type} = meta) do
    case compile(spec, kp, type) do
      {ms, :scan} -> {:scan, ms, meta}
      {ms, {:keys, keys}} -> {:keys, ms, meta, keys}
    end
  end

  # Compiles `[{head, guards, body}]` (`head` with `:_` as its key) for a
  # table `tab` of meta `{kp, type}`; returns `:error` when the compiler
  # rejects it (the caller then compiles the original spec, which fails
  # the same way). The last one is kept with `tab` (see `plan/2`).
  defp compile_any_key(head, guards, body, {kp, type}, tab) do
    case :erlang.get(@last_key) do
      {^head, ^guards, ^body, ^kp, ^type, ms, nil, ^tab} ->
        ms

      {^head, ^guards, ^body, ^kp, ^type, ms, nil, _other} ->
        :erlang.put(@last_key, {head, guards, body, kp, type, ms, nil, tab})
        ms

      _ ->
        cache = Process.get(@cache_key, %{})
        spec = [{head, guards, body}]
        key = {:any_key, spec, kp, type}

        case cached(cache, key, spec) do
          {:ok, ms, exact} ->
            :erlang.put(@last_key, {head, guards, body, kp, type, ms, exact, tab})
            ms

          :miss ->
            try do
              :ets.match_spec_compile(spec)
            catch
              :error, _ -> :error
            else
              ms ->
                exact = exact_key(spec)
                cache = if map_size(cache) >= @cache_max, do: %{}, else: cache
                Process.put(@cache_key, Map.put(cache, key, {ms, exact}))
                :erlang.put(@last_key, {head, guards, body, kp, type, ms, exact, tab})
                ms
            end
        end
    end
  end

  # Cached specs are found with `=:=`, under which `0.0` and `-0.0` are
  # equal on OTP 25 although a match spec tells them apart: a spec holding
  # a zero float is cached with its encoding, compared on every hit.
  defp exact_key(spec), do: if(has_zero?(spec), do: :erlang.term_to_binary(spec))

  defp cached(cache, key, spec) do
    case cache do
      %{^key => {value, nil}} ->
        {:ok, value, nil}

      %{^key => {value, exact}} ->
        if exact == :erlang.term_to_binary(spec), do: {:ok, value, exact}, else: :miss

      _ ->
        :miss
    end
  end

  defp has_zero?(f) when is_float(f), do: f == 0
  defp has_zero?(t) when is_tuple(t), do: has_zero?(Tuple.to_list(t))
  defp has_zero?([h | t]), do: has_zero?(h) or has_zero?(t)
  defp has_zero?(m) when is_map(m), do: has_zero?(:maps.to_list(m))
  defp has_zero?(_), do: false

  # Ground, with no float, map or fun inside: matching it in a head is
  # `=:=`, the key equality of hash tables (floats are not: on OTP 25
  # `0.0 =:= -0.0`, yet a head's `-0.0` does not match `0.0`).
  defp plain?(k)
       when is_integer(k) or is_bitstring(k) or is_pid(k) or is_reference(k) or is_port(k),
       do: true

  defp plain?(:_), do: false

  defp plain?(a) when is_atom(a) do
    case Atom.to_string(a) do
      "$" <> _ -> false
      _ -> true
    end
  end

  defp plain?(t) when is_tuple(t), do: plain_tuple?(t, tuple_size(t))
  defp plain?([h | t]), do: plain?(h) and plain?(t)
  defp plain?([]), do: true
  defp plain?(_), do: false

  defp plain_tuple?(_t, 0), do: true
  defp plain_tuple?(t, i), do: plain?(:erlang.element(i, t)) and plain_tuple?(t, i - 1)

  defp check_readable_now(tab), do: Nif.table_member(tab, make_ref())

  # A continuation made through a name holds `{name, tid}`: the table it
  # walks, and the name to check it by (and to find a table created again
  # under it).
  defp named(tab) when is_atom(tab), do: {tab, Nif.table_whereis(tab)}
  defp named(tab), do: tab

  defp table_of({name, _tid}), do: name
  defp table_of(tab), do: tab

  # As in ETS, an ordered_set's continuation made through a name goes on
  # in the table that has the name now (one deleted and created again
  # under it), after the last key it read. Only when nothing it read is
  # left to return, though: results buffered from the deleted table are
  # not returned, and a continuation of a looked-up key, or with a buffer,
  # raises instead (ETS goes on there too). A hash table's continuation
  # belongs to its table (a position there means nothing in another one):
  # it raises, as in ETS.
  defp rebind({name, tid} = tab, buffer, source) do
    case Nif.table_whereis(name) do
      ^tid ->
        {tab, source}

      new ->
        case source do
          {:cursor, {^tid, last, reverse, size}} when buffer == [] and is_boolean(reverse) ->
            new = ordered_set!(new)
            {{name, new}, {:cursor, {new, last, reverse, size}}}

          {:cursor, {^tid, last, reverse, size}, filter}
          when buffer == [] and is_boolean(reverse) ->
            new = ordered_set!(new)
            {{name, new}, {:cursor, {new, last, reverse, size}, filter}}

          _ ->
            raise ArgumentError,
                  "the continuation's table #{inspect(name)} was deleted (and created again)"
        end
    end
  end

  defp rebind(tab, _buffer, source), do: {tab, source}

  defp ordered_set!(tab) do
    case is_reference(tab) and meta!(tab) do
      {_keypos, :ordered_set} -> tab
      _ -> raise ArgumentError, "the table identifier does not refer to an existing table"
    end
  end

  # keypos and type never change for a table reference: cached per process
  # (info/1 costs microseconds). Names resolve to their current reference.
  defp meta!(tab) when is_atom(tab) do
    case Nif.table_whereis(tab) do
      ref when is_reference(ref) -> meta!(ref)
      _ -> raise ArgumentError, "the table identifier does not refer to an existing table"
    end
  end

  defp meta!(tab) when is_reference(tab) do
    cache = Process.get(@meta_key, %{})

    case cache do
      %{^tab => meta} ->
        meta

      _ ->
        meta = fetch_meta!(tab)
        cache = if map_size(cache) >= @cache_max, do: %{}, else: cache
        Process.put(@meta_key, Map.put(cache, tab, meta))
        meta
    end
  end

  defp meta!(tab), do: fetch_meta!(tab)

  defp fetch_meta!(tab) do
    case Table.info(tab) do
      :undefined ->
        raise ArgumentError, "the table identifier does not refer to an existing table"

      info ->
        {Keyword.fetch!(info, :keypos), Keyword.fetch!(info, :type)}
    end
  end

  # Compiles `spec` and analyses its heads for keypos `kp`. Both are cached
  # per process (a few dozen specs at most) since compiling costs more than
  # a lookup.
  defp compile(spec, kp, type) do
    cache = Process.get(@cache_key, %{})
    key = {spec, kp, type}

    case cached(cache, key, spec) do
      {:ok, compiled, _exact} ->
        compiled

      :miss ->
        # Compiled first: an invalid spec raises as in ETS.
        ms = :ets.match_spec_compile(spec)

        compiled =
          case ranged(spec, kp, type, analyse(spec, kp)) do
            {^spec, plan} -> {ms, plan}
            {ranged_spec, plan} -> {:ets.match_spec_compile(ranged_spec), plan}
          end

        cache = if map_size(cache) >= @cache_max, do: %{}, else: cache
        Process.put(@cache_key, Map.put(cache, key, {compiled, exact_key(spec)}))
        compiled
    end
  end

  # `{:keys, keys}` when every clause either cannot match any object or
  # binds the key to a ground term; `:scan` otherwise.
  defp analyse(spec, kp) do
    Enum.reduce_while(spec, {:keys, []}, fn {head, _guards, _body}, {:keys, keys} ->
      cond do
        is_tuple(head) and tuple_size(head) >= kp ->
          key = :erlang.element(kp, head)

          if ground?(key),
            do: {:cont, {:keys, [key | keys]}},
            else: {:halt, :scan}

        # Variables and `:_` match any object.
        is_atom(head) and not ground?(head) ->
          {:halt, :scan}

        # Anything else matches no object (objects are tuples of at least
        # keypos elements).
        true ->
          {:cont, {:keys, keys}}
      end
    end)
  end

  # ETS's ordered_set looks one bound key up, but walks the range from the
  # smallest to the greatest of several, matching the heads as patterns:
  # a variable-free map in a key then matches every map with its pairs that
  # falls in the range (a lookup would find only that map). So do we when
  # it makes a difference (a map in a key, more than one key): a scan whose
  # clauses also require the key to be in that range.
  defp ranged(spec, kp, :ordered_set, {:keys, keys} = plan) do
    distinct = keys |> Enum.sort() |> dedup_equal()

    if match?([_, _ | _], distinct) and Enum.any?(keys, &has_map?/1) do
      key = {:element, kp, :"$_"}

      range =
        {:andalso, {:>=, key, {:const, hd(distinct)}},
         {:"=<", key, {:const, List.last(distinct)}}}

      {Enum.map(spec, fn {head, guards, body} -> {head, [range | guards], body} end), :scan}
    else
      {spec, plan}
    end
  end

  defp ranged(spec, _kp, _type, plan), do: {spec, plan}

  defp has_map?(m) when is_map(m), do: true
  defp has_map?(t) when is_tuple(t), do: t |> Tuple.to_list() |> has_map?()
  defp has_map?([h | t]), do: has_map?(h) or has_map?(t)
  defp has_map?(_), do: false

  # No variable (nor anything that might be one) and no `:_` inside.
  defp ground?(:_), do: false

  defp ground?(a) when is_atom(a) do
    case Atom.to_string(a) do
      "$" <> _ -> false
      _ -> true
    end
  end

  defp ground?(t) when is_tuple(t), do: t |> Tuple.to_list() |> ground_list?()
  defp ground?(l) when is_list(l), do: ground_list?(l)

  # A map pattern matches every map that has its pairs, yet ETS treats a
  # variable-free map in the key position as a bound key (it looks the map
  # up, in every table type): so do we, for ETS's results.
  defp ground?(m) when is_map(m),
    do: Enum.all?(m, fn {k, v} -> ground?(k) and ground?(v) end)

  defp ground?(_), do: true

  defp ground_list?([h | t]), do: ground?(h) and ground_list?(t)
  defp ground_list?([]), do: true
  defp ground_list?(tail), do: ground?(tail)

  defp lookup_keys(tab, _meta, [key]), do: Table.lookup(tab, key)

  defp lookup_keys(tab, {_kp, type}, keys) do
    keys =
      case type do
        # Term order, and one lookup per `==` class (1 and 1.0 are one key).
        :ordered_set -> keys |> Enum.sort() |> dedup_equal()
        # Both 1 and 1.0 are keys of their own; `--`/uniq use `=:=`. ETS
        # visits the keys in the order of their first clause and gives
        # the last one's objects first.
        _ -> keys |> :lists.reverse() |> Enum.uniq() |> :lists.reverse()
      end

    Enum.flat_map(keys, &Table.lookup(tab, &1))
  end

  defp dedup_equal([a, b | t]) when a == b, do: dedup_equal([a | t])
  defp dedup_equal([a | t]), do: [a | dedup_equal(t)]
  defp dedup_equal([]), do: []

  # ------------------------------------------------------------------
  # Running and scanning

  defp run([], _ms), do: []
  # One object gives at most one result: nothing to reverse.
  defp run([_] = objects, ms), do: :ets.match_spec_run_r(objects, ms, [])
  defp run(objects, ms), do: :lists.reverse(:ets.match_spec_run_r(objects, ms, []))

  # All results of a scan, in the order of the walk (see `first_chunk/2`).
  defp scan_results(tab, ms, walk, filter) do
    run = fn chunk, acc -> :ets.match_spec_run_r(chunk, ms, acc) end
    :lists.reverse(fold_chunks(tab, [], run, walk, filter))
  end

  # Necessary conditions of `spec` on the objects it can match, for the NIF
  # to leave the others out of a scan's chunks (see `Nif.table_scan/3`):
  # per clause, the object's arity, top-level elements equal to literals
  # (atoms, integers, binaries of at most 64 bytes: their encoding is
  # unique, so equal means `=:=`) and top-level elements a guard compares
  # with a number (`<`, `=<`, `>`, `>=`, `==`; `=:=` implies `==`). `nil`
  # when a clause's head is not a tuple (it may match any object).
  defp prefilter(spec) do
    Enum.reduce_while(spec, [], fn
      {head, guards, _body}, acc when is_tuple(head) and is_list(guards) ->
        {:cont, [clause_filter(head, guards) | acc]}

      _clause, _acc ->
        {:halt, nil}
    end)
    |> case do
      nil -> nil
      clauses -> :lists.reverse(clauses)
    end
  end

  # Elements past the 16th are not looked at (see `prefilter::MAX_ELEMENT`).
  @filter_reach 16

  defp clause_filter(head, guards) do
    elements = head |> Tuple.to_list() |> Enum.with_index() |> Enum.take(@filter_reach)
    equal = for {el, i} <- elements, filter_literal?(el), do: {i, el}

    vars =
      Enum.reduce(elements, %{}, fn {el, i}, vars ->
        if match_var?(el), do: Map.put_new(vars, el, i), else: vars
      end)

    compare = for g <- guards, c = guard_filter(g, vars), do: c
    {tuple_size(head), equal, compare}
  end

  defp filter_literal?(a) when is_atom(a),
    do: not String.starts_with?(Atom.to_string(a), ["$", "_"])

  defp filter_literal?(i) when is_integer(i), do: true
  # (Bigger binaries may be stored out of line, as blobs: the NIF also
  # drops literals of `blob::MIN_BYTES` (65) bytes or more.)
  defp filter_literal?(b) when is_binary(b), do: byte_size(b) <= 64
  defp filter_literal?(_), do: false

  @i64 -0x8000000000000000..0x7FFFFFFFFFFFFFFF

  @flip %{:< => :>, :"=<" => :>=, :> => :<, :>= => :"=<", :== => :==}

  defp guard_filter({op, a, b}, vars) when op in [:<, :"=<", :>, :>=, :==, :"=:="] do
    op = if op == :"=:=", do: :==, else: op

    case {filter_var(a, vars), filter_number(b), filter_var(b, vars), filter_number(a)} do
      {i, n, _, _} when i != nil and n != nil -> {i, op, n}
      {_, _, i, n} when i != nil and n != nil -> {i, Map.fetch!(@flip, op), n}
      _ -> nil
    end
  end

  defp guard_filter(_guard, _vars), do: nil

  defp filter_var(a, vars) when is_atom(a), do: Map.get(vars, a)
  defp filter_var(_, _), do: nil

  defp match_var?(a) when is_atom(a), do: Atom.to_string(a) =~ ~r/^\$\d+$/
  defp match_var?(_), do: false

  # (Integers in i64 only: the engine orders bigger ones against floats
  # through the VM, an object at a time.)
  defp filter_number(n) when is_float(n) or (is_integer(n) and n in @i64), do: n
  defp filter_number({:const, n}), do: filter_number(n)
  defp filter_number(_), do: nil

  # Folds `fun.(chunk, acc)` over the table's chunks, in walk order. A
  # table of more than one chunk is fixed (`safe_fixtable/2`) meanwhile, as
  # ETS fixes a table its select/2, folds, select_delete/2... walk: removals
  # (by `fun`, e.g. select_delete/2, or by other processes) then do not
  # shrink, that is reorder, the shards under the walk, which would make it
  # miss objects after a shrunk shard's saved position.
  defp fold_chunks(tab, acc, fun, walk \\ :forward, filter \\ nil),
    do: scan_fixed(tab, fn -> fold_walk(tab, acc, fun, walk, filter) end)

  @doc false
  # Runs the walk `fun` over `tab` with the table fixed when the walk may
  # take more than one chunk: more objects than a chunk holds, or more
  # bytes (chunks also stop at 4 MiB). The fixation is taken on the table's
  # id, not its name, so that a rename during the walk cannot leave it
  # fixed. Also used by `NativeStore.Table.tab2list/1`.
  def scan_fixed(tab, fun) do
    # (A missing table counts as big: fixing it raises, as the walk would.)
    if Nif.table_multi_chunk(tab) != false do
      tid = id_of(tab)
      Table.safe_fixtable(tid, true)

      try do
        fun.()
      after
        Table.safe_fixtable(tid, false)
      end
    else
      fun.()
    end
  end

  # A named table's id (a missing name stays itself: fixing it raises).
  defp id_of(tab) when is_atom(tab) do
    case Table.whereis(tab) do
      :undefined -> tab
      tid -> tid
    end
  end

  defp id_of(tab), do: tab

  defp fold_walk(tab, acc, fun, walk, filter) do
    {chunk, source} = first_chunk(tab, walk, nil, filter)
    fold_chunks_from(fun.(chunk, acc), source, fun, filter)
  end

  defp fold_chunks_from(acc, :done, _fun, _filter), do: acc

  defp fold_chunks_from(acc, {:cursor, cursor}, fun, filter) do
    {chunk, source} = next_chunk(cursor, filter)
    fold_chunks_from(fun.(chunk, acc), source, fun, filter)
  end

  # The first chunk of a walk over the table: `:forward` is traversal order
  # (term order for an ordered_set), `:backward` descending key order on an
  # ordered_set (traversal order on other types). With a `limit` (select/3)
  # the walk starts with that many objects and doubles its chunks, so a
  # small limit on a big table copies few objects.
  # With a `filter` (see `prefilter/1`), the chunks leave out the objects
  # that no clause of the scan's specification can match.
  defp first_chunk(tab, walk, limit, filter) do
    count_chunk()

    result =
      cond do
        limit != nil and filter != nil and limit >= @filter_min_chunk ->
          Nif.table_walk_scan(tab, walk == :backward, limit, filter)

        limit != nil ->
          Nif.table_walk(tab, walk == :backward, limit)

        filter != nil ->
          Nif.table_scan(tab, walk == :backward, filter)

        walk == :forward ->
          Nif.table_to_list(tab)

        true ->
          Nif.table_to_list_reverse(tab)
      end

    case result do
      {:done, list} -> {list, :done}
      {:more, list, cursor} -> yielded({list, {:cursor, cursor}}, limit || @chunk)
    end
  end

  defp next_chunk(cursor, filter \\ nil) do
    count_chunk()
    result = if filter, do: Nif.cursor_scan(cursor, [], filter), else: Nif.cursor_next(cursor, [])

    case result do
      {:done, list} -> {list, :done}
      # (The position records how many objects its call copies.)
      {:more, list, next} -> yielded({list, {:cursor, next}}, :erlang.element(4, cursor))
    end
  end

  # A chunk NIF counts as one reduction; charge it as the work it was
  # (half a reduction per object it may have copied, 1000 for a full
  # chunk) so the process is scheduled out between big chunks, not after
  # the few objects of a `select/3` with a small limit.
  defp yielded(result, size) do
    :erlang.bump_reductions(div(min(size, @chunk), 2))
    result
  end

  # Test instrumentation (see `chunks_fetched/0`): one process-dictionary
  # read and write (`Process.get/2` with a default, a remote call, cost
  # about 100 instructions more per chunk).
  defp count_chunk do
    case :erlang.get(@chunks_key) do
      n when is_integer(n) -> :erlang.put(@chunks_key, n + 1)
      _ -> :erlang.put(@chunks_key, 1)
    end
  end

  @doc false
  # For tests: how many chunks this process has fetched from the tables.
  def chunks_fetched do
    case :erlang.get(@chunks_key) do
      n when is_integer(n) -> n
      _ -> 0
    end
  end
end
