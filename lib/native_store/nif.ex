defmodule NativeStore.Nif do
  @moduledoc false
  # Stubs of the Rust NIF library (native/nif). Each is replaced when the
  # library loads; the public modules wrap them with documented APIs.

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :native_store |> :code.priv_dir() |> Path.join("native_store_nif")
    :erlang.load_nif(String.to_charlist(path), 0)
  end

  defp nif_error, do: :erlang.nif_error(:nif_not_loaded)

  # Tables
  def table_new(_name, _named, _access, _keypos, _heir, _heir_data, _flags, _type),
    do: nif_error()

  def table_insert(_tab, _objects), do: nif_error()
  def table_insert_new(_tab, _objects), do: nif_error()
  def table_insert_dirty(_tab, _objects), do: nif_error()
  def table_insert_new_dirty(_tab, _objects), do: nif_error()
  def table_lookup(_tab, _key), do: nif_error()
  def table_lookup_element(_tab, _key, _pos), do: nif_error()
  def table_member(_tab, _key), do: nif_error()
  def table_take(_tab, _key), do: nif_error()
  def table_delete(_tab), do: nif_error()
  def table_delete_key(_tab, _key), do: nif_error()
  def table_delete_object(_tab, _object), do: nif_error()
  # `table_delete_all_objects(tab)`: `true`, or a handle on the contents
  # taken out, which `table_free_taken(handle)` (dirty) frees.
  def table_delete_all_objects(_tab), do: nif_error()
  def table_free_taken(_taken), do: nif_error()
  # `reclaim_flush()`: waits (dirty) until the background thread has freed
  # what it was given before the call; `true`. For benchmarks and tests.
  def reclaim_flush, do: nif_error()
  # `reclaim_pending()`: how many values the background thread has not freed yet.
  def reclaim_pending, do: nif_error()
  def table_delete_object_exact(_tab, _object), do: nif_error()
  def table_update_counter(_tab, _key, _op), do: nif_error()
  def table_update_counter_default(_tab, _key, _op, _default), do: nif_error()
  def table_update_element(_tab, _key, _spec), do: nif_error()

  # Chunked traversal. `table_to_list(tab)` returns `{:done, list}` or
  # `{:more, list, position}`; `cursor_next(position, acc)` returns
  # `{:done, list}` or `{:more, list, next_position}`. A position is a
  # plain term (`{tid, shard, bucket, size}`, or `{tid, last_key,
  # reverse?, size}` for an ordered_set): continuing from it twice gives
  # the same chunk (for an unchanged table). Each call decodes at most about
  # 2000 objects (a bounded time on the scheduler). The chunk comes out in
  # traversal order: term order of the keys for `:ordered_set`, the order
  # of `table_first/1` and `table_next/2` for the other types (a bag's
  # objects of one key in insertion order). The list returned is
  # `chunk ++ acc`, so with `acc = []` each call gives exactly one chunk in
  # order; the first chunk is the one `table_to_list/1` returns.
  # `table_to_list_reverse/1` starts the same walk in descending key order
  # on an `:ordered_set` (on other types it is `table_to_list/1`);
  # `table_walk(tab, reverse?, first)` starts either with a first chunk of
  # at most `first` objects, the next ones doubling (select/3's limits).
  def table_to_list(_tab), do: nif_error()
  def table_to_list_reverse(_tab), do: nif_error()
  def table_walk(_tab, _reverse?, _first), do: nif_error()
  def cursor_next(_position, _acc), do: nif_error()
  # `table_scan(tab, reverse?, filter)` / `cursor_scan(position, acc,
  # filter)`: a walk whose chunks leave out the objects no clause of a match
  # specification can match (`filter`: per clause `{arity, [{index,
  # literal}], [{index, op, number}]}`, see `NativeStore.Table.Match`).
  def table_scan(_tab, _reverse?, _filter), do: nif_error()
  # `table_walk_scan(tab, reverse?, first, filter)`: `table_scan/3` whose
  # first chunk looks at `first` objects (select/3 with a limit).
  def table_walk_scan(_tab, _reverse?, _first, _filter), do: nif_error()
  def cursor_scan(_position, _acc, _filter), do: nif_error()

  # safe_fixtable/2: `table_safe_fixtable(tab, fix?, erlang:monotonic_time())`
  # returns true, or :untidy when the unfix left housekeeping that
  # `table_tidy(tab)` (dirty) does at once; `table_fixation(tab)` is false,
  # `{since, [{pid, count}]}` (`since` in native monotonic units) or
  # :undefined.
  def table_safe_fixtable(_tab, _fix, _now), do: nif_error()
  def table_tidy(_tab), do: nif_error()
  # For tests: `table_split_parts(tab)` splits every key range of an
  # ordered_set in two (dirty) and returns the number of parts.
  def table_split_parts(_tab), do: nif_error()
  def table_fixation(_tab), do: nif_error()
  def table_swap_objects(_tab, _key, _expected, _new), do: nif_error()
  def table_stats(_tab), do: nif_error()

  # slot/2: the objects in slot `i`, :"$end_of_table" at the end, badarg
  # past it; the `_dirty` variant runs on a dirty CPU scheduler.
  def table_slot(_tab, _i), do: nif_error()
  def table_slot_dirty(_tab, _i), do: nif_error()

  # Traversal: a key or :"$end_of_table". `table_last/1` and `table_prev/2`
  # are `table_first/1` and `table_next/2` on tables other than ordered_set.
  def table_first(_tab), do: nif_error()
  def table_last(_tab), do: nif_error()
  def table_next(_tab, _key), do: nif_error()
  def table_prev(_tab, _key), do: nif_error()
  def table_info(_tab), do: nif_error()
  def table_count(_tab, _size?), do: nif_error()
  # Whether a walk of the table may take more than one chunk (or :undefined).
  def table_multi_chunk(_tab), do: nif_error()
  def table_whereis(_name), do: nif_error()
  def table_all(), do: nif_error()
  def table_replace(_tab, _key, _expected, _new), do: nif_error()
  def table_merge_map(_tab, _key, _map), do: nif_error()
  def table_give_away(_tab, _pid, _gift), do: nif_error()
  def table_set_heir(_tab, _heir, _data), do: nif_error()
  def table_set_protection(_tab, _access), do: nif_error()
  def table_rename(_tab, _name), do: nif_error()

  # Registries
  def registry_new(_name, _unique, _partitions, _listeners), do: nif_error()
  def registry_register(_name, _key, _value), do: nif_error()
  def registry_unregister(_name, _key, _values), do: nif_error()
  def registry_lookup(_name, _key), do: nif_error()
  def registry_whereis(_name, _key), do: nif_error()
  def registry_values(_name, _key, _pid), do: nif_error()
  def registry_keys(_name, _pid), do: nif_error()
  def registry_own_value(_name, _key), do: nif_error()
  def registry_put_value(_name, _key, _value), do: nif_error()
  def registry_count(_name), do: nif_error()
  def registry_to_list(_name), do: nif_error()
  def registry_info(_name), do: nif_error()
  def registry_memory(_name), do: nif_error()
  def registry_meta(_name, _key), do: nif_error()
  def registry_put_meta(_name, _key, _value), do: nif_error()
  def registry_delete_meta(_name, _key), do: nif_error()
end
