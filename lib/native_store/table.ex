defmodule NativeStore.Table do
  @moduledoc """
  A drop-in replacement for `:ets`, stored in a Rust NIF.

  Replace `:ets.` with `NativeStore.Table.`: the names, arguments, results
  and errors are those of `:ets`, for `:set`, `:ordered_set`, `:bag` and
  `:duplicate_bag` tables, including match specifications (`select/2`,
  `match/2`, `select_replace/2`, ... and their continuations), traversal
  and folds, `safe_fixtable/2`, ownership transfer, the file functions
  (`tab2file/2`, `file2tab/1`, `to_dets/2`, ...), `init_table/2`, QLC
  tables (`table/1,2`), `slot/2` and `i/0,1,2,3`: every documented
  function of OTP 25's `:ets`. Objects are tuples; any term can be a key
  or a value, and keys are matched as ETS matches them (in a set, `1` and
  `1.0` are different keys).

      iex> tab = NativeStore.Table.new(:users, [:set, :public])
      iex> NativeStore.Table.insert(tab, {"alice", %{role: :admin}, 0})
      true
      iex> NativeStore.Table.lookup(tab, "alice")
      [{"alice", %{role: :admin}, 0}]
      iex> NativeStore.Table.update_counter(tab, "alice", {3, 5})
      5
      iex> NativeStore.Table.insert_new(tab, {"alice", :other, 1})
      false
      iex> NativeStore.Table.insert(tab, {1, :one, 0})
      true
      iex> NativeStore.Table.lookup(tab, 1.0)
      []
      iex> NativeStore.Table.delete(tab)
      true

  Named tables work as in ETS:

      iex> NativeStore.Table.new(:doc_counters, [:named_table, :public])
      :doc_counters
      iex> NativeStore.Table.update_counter(:doc_counters, :hits, 1, {:hits, 0})
      1
      iex> NativeStore.Table.info(:doc_counters, :size)
      1
      iex> NativeStore.Table.delete(:doc_counters)
      true

  ## Ownership

  The process that creates a table owns it. When the owner exits, the table
  is deleted, or handed to its heir (`{:heir, pid, data}`), who then receives
  `{:"ETS-TRANSFER", tid, from_pid, data}`. This is driven by a process
  monitor held by the NIF: no extra process exists per table.

  Access is enforced as in ETS: `:protected` (the default) tables are
  written only by their owner, `:private` ones are also read only by it;
  any other caller gets `ArgumentError`.

  ## Never stalling a scheduler

  Work that grows with the table is bounded per call: traversals
  (`tab2list/1`, unbound `select/2` and `match/2`, folds, `select_delete/2`)
  copy at most about 2,000 objects per NIF call and return to the
  scheduler in between; `delete/1`, `delete_all_objects/1` and the deletion
  of a table whose owner exited detach the data at once and free it on a
  background thread (`delete_all_objects/1` frees a table of up to 100,000
  objects itself, on a dirty scheduler, before it returns); inserting a
  list of more than 1,000 objects runs on a dirty scheduler. A match specification whose key is bound does a lookup
  instead of a scan.

  ## Differences from ETS

  * All four table types exist. `:ordered_set` keys are ordered by term
    order and equal when `==` (`1` and `1.0` are the same key); maps,
    references, funs and ports as `:ordered_set` keys are compared by the VM
    (slower than numbers, atoms, binaries and tuples of them).
  * `first/1` and `next/2` on `:set` and bag tables walk shard by shard:
    the order is unspecified, as in ETS, but not ETS's own; as in ETS,
    `next/2` of a key that is not in the table raises `ArgumentError`
    unless the table is fixed (`safe_fixtable/2`) and the key was deleted
    since. As in ETS, a fixed table's walk meets every object that stays
    exactly once while objects are inserted and deleted meanwhile.
  * `update_counter/3,4` works with integers of up to 127 bits (counters,
    increments, thresholds and set values; ETS has no bound): past that it
    raises `ArgumentError`.
  * A traversal is not a snapshot. Scans done in one call (`tab2list/1`,
    `select/2`, `select_count/2`, `match_object/2`, folds,
    `select_delete/2`...) fix the table while they walk it, as ETS does, so
    they meet every object that stays exactly once. Walks the caller
    drives (`first/1`-`next/2`, `select/3` continuations) on an unfixed
    table may miss or repeat objects when other processes insert or delete
    meanwhile (a shard grows, shrinks, or takes back what a fixation kept
    apart), as an ETS traversal without `safe_fixtable/2` can; nothing
    reorders a table that nobody writes.
  * `info/1` reports `memory` in words, counted from the bytes the native
    table really holds (entries, slots and shards).
  * Binaries of 65 bytes or more that are elements of a `:set` or
    `:ordered_set` object (other than its key) are kept out of line and
    shared with the processes that look them up, as ETS shares its off-heap
    binaries; other values (and every value of a bag) are copied in and out.
    What is copied in is limited to 2 GiB per object: a bigger object
    raises `ArgumentError` (ETS has no such limit).
  * The `info/2` item `:stats` has ETS's shape, but its numbers describe
    NativeStore's buckets (a bucket holds one key), not ETS's hash chains.
  * `ArgumentError` messages are NativeStore's own (ETS's badarg messages
    come from the VM); the exception is raised exactly where ETS raises
    one.
  * Keys are compared by their canonical encoding, so keys that are equal
    (`=:=`) are one key, as in ETS: `-0.0` and `0.0` on OTP 25/26 (also
    nested deep or captured in a fun), equal funs made by different
    processes. Objects keep their exact terms, and whole objects
    (`delete_object/2`, bag duplicates) compare as terms too.
  """

  alias NativeStore.Nif

  # Lists longer than this are inserted on a dirty scheduler: encoding them
  # takes longer than a normal scheduler may be held (about 1 ms).
  @dirty_list 1000

  @typedoc "A table: the reference returned by `new/2`, or the name of a named table."
  @type table :: reference() | atom()
  @typedoc "An object: a tuple with at least `keypos` elements."
  @type object :: tuple()
  @typedoc "A counter operation, as in `:ets.update_counter/3`."
  @type update_op ::
          integer()
          | {pos_integer(), integer()}
          | {pos_integer(), integer(), integer(), integer()}
  @typedoc "Options of `new/2`, as in `:ets.new/2`."
  @type option ::
          :set
          | :ordered_set
          | :bag
          | :duplicate_bag
          | :public
          | :protected
          | :private
          | :named_table
          | :compressed
          | {:keypos, pos_integer()}
          | {:heir, pid(), term()}
          | {:heir, :none}
          | {:read_concurrency, boolean()}
          | {:write_concurrency, boolean() | :auto}
          | {:decentralized_counters, boolean()}
  @typedoc "Items of `info/2`."
  @type info_item ::
          :compressed
          | :decentralized_counters
          | :heir
          | :id
          | :keypos
          | :memory
          | :name
          | :named_table
          | :node
          | :owner
          | :protection
          | :read_concurrency
          | :fixed
          | :safe_fixed
          | :safe_fixed_monotonic_time
          | :size
          | :stats
          | :type
          | :write_concurrency

  @doc """
  Creates a table, as `:ets.new/2`. Returns the table reference, or `name`
  with `:named_table`. Raises `ArgumentError` for bad options or a name that
  is taken. The table type is `:set` (the default), `:ordered_set`, `:bag`
  or `:duplicate_bag`; the last one given wins, as in ETS.
  """
  @spec new(atom(), [option()]) :: table()
  def new(name, options) when is_atom(name) and is_list(options) do
    o =
      parse_options(options, %{
        access: :protected,
        type: :set,
        named: false,
        keypos: 1,
        heir: :none,
        heir_data: nil,
        rc: false,
        wc: false,
        dc: nil,
        compressed: false
      })

    {wc, dc} = concurrency(o)
    # As ETS: no read concurrency on a private table.
    rc = o.rc and o.access != :private

    Nif.table_new(
      name,
      o.named,
      o.access,
      o.keypos,
      o.heir,
      o.heir_data,
      {rc, wc, dc, o.compressed},
      o.type
    )
  end

  def new(name, options) do
    raise ArgumentError,
          "expected an atom name and a list of options, got: #{inspect(name)}, #{inspect(options)}"
  end

  # `write_concurrency` and `decentralized_counters` as ETS reports them
  # (`info/1`): neither on a private table nor without write concurrency;
  # decentralized counters by default with `:auto`, and on an ordered_set.
  defp concurrency(%{access: :private}), do: {false, false}
  defp concurrency(%{wc: false}), do: {false, false}
  defp concurrency(%{wc: wc, dc: dc}) when is_boolean(dc), do: {wc, dc}
  defp concurrency(%{wc: :auto}), do: {:auto, true}
  defp concurrency(%{wc: true, type: type}), do: {true, type == :ordered_set}

  defp parse_options([], acc), do: acc

  defp parse_options([type | rest], acc) when type in [:set, :ordered_set, :bag, :duplicate_bag],
    do: parse_options(rest, %{acc | type: type})

  defp parse_options([access | rest], acc) when access in [:public, :protected, :private],
    do: parse_options(rest, %{acc | access: access})

  defp parse_options([:named_table | rest], acc), do: parse_options(rest, %{acc | named: true})

  defp parse_options([:compressed | rest], acc),
    do: parse_options(rest, %{acc | compressed: true})

  defp parse_options([{:keypos, pos} | rest], acc) when is_integer(pos) and pos >= 1,
    do: parse_options(rest, %{acc | keypos: pos})

  defp parse_options([{:heir, :none} | rest], acc),
    do: parse_options(rest, %{acc | heir: :none, heir_data: nil})

  defp parse_options([{:heir, pid, data} | rest], acc) when is_pid(pid) and node(pid) == node(),
    do: parse_options(rest, %{acc | heir: pid, heir_data: data})

  defp parse_options([{:read_concurrency, b} | rest], acc) when is_boolean(b),
    do: parse_options(rest, %{acc | rc: b})

  defp parse_options([{:write_concurrency, w} | rest], acc) when is_boolean(w) or w == :auto,
    do: parse_options(rest, %{acc | wc: w})

  defp parse_options([{:decentralized_counters, b} | rest], acc) when is_boolean(b),
    do: parse_options(rest, %{acc | dc: b})

  defp parse_options([other | _], _acc),
    do: raise(ArgumentError, "invalid NativeStore.Table option: #{inspect(other)}")

  defp parse_options(other, _acc),
    do: raise(ArgumentError, "expected a proper list of options, got: #{inspect(other)}")

  @doc "Inserts an object or a list of objects, replacing objects with the same key, as `:ets.insert/2`."
  @spec insert(table(), object() | [object()]) :: true
  def insert(table, objects) when is_list(objects) and length(objects) > @dirty_list,
    do: Nif.table_insert_dirty(table, objects)

  def insert(table, objects), do: Nif.table_insert(table, objects)

  @doc """
  Inserts like `insert/2` only if no object with the key (with any of the
  keys, for a list) exists; returns whether it inserted, as `:ets.insert_new/2`.
  """
  @spec insert_new(table(), object() | [object()]) :: boolean()
  def insert_new(table, objects) when is_list(objects) and length(objects) > @dirty_list,
    do: Nif.table_insert_new_dirty(table, objects)

  def insert_new(table, objects), do: Nif.table_insert_new(table, objects)

  @doc "Returns `[object]` for `key`, or `[]`, as `:ets.lookup/2`."
  @spec lookup(table(), term()) :: [object()]
  def lookup(table, key), do: Nif.table_lookup(table, key)

  @doc """
  Returns element `pos` of the object under `key`, as `:ets.lookup_element/3`.
  Raises `ArgumentError` when there is no such object or position.
  """
  @spec lookup_element(table(), term(), pos_integer()) :: term()
  def lookup_element(table, key, pos) when is_integer(pos),
    do: Nif.table_lookup_element(table, key, pos)

  def lookup_element(_table, _key, pos),
    do: raise(ArgumentError, "expected an integer position, got: #{inspect(pos)}")

  @doc """
  Like `lookup_element/3`, but returns `default` when there is no object
  under `key` (as `:ets.lookup_element/4` of OTP 26).
  """
  @spec lookup_element(table(), term(), pos_integer(), term()) :: term()
  def lookup_element(table, key, pos, default) do
    if member(table, key), do: lookup_element(table, key, pos), else: default
  end

  @doc "True when an object with `key` exists, as `:ets.member/2`."
  @spec member(table(), term()) :: boolean()
  def member(table, key), do: Nif.table_member(table, key)

  @doc "Removes and returns the object under `key` (`[object]` or `[]`), as `:ets.take/2`."
  @spec take(table(), term()) :: [object()]
  def take(table, key), do: Nif.table_take(table, key)

  @doc "Deletes the table, as `:ets.delete/1`. Its memory is freed in the background."
  @spec delete(table()) :: true
  def delete(table), do: Nif.table_delete(table)

  @doc "Deletes the object under `key`, as `:ets.delete/2`."
  @spec delete(table(), term()) :: true
  def delete(table, key), do: Nif.table_delete_key(table, key)

  @doc "Deletes the object if an identical one (`=:=`) is stored, as `:ets.delete_object/2`."
  @spec delete_object(table(), object()) :: true
  def delete_object(table, object), do: Nif.table_delete_object(table, object)

  @doc """
  Deletes every object, as `:ets.delete_all_objects/1`: the table is empty
  at once. The memory of a table of up to 100,000 objects (and 12 MiB) is
  freed before this returns, on a dirty scheduler past 1,000 objects; that
  of a bigger one on a background thread.
  """
  @spec delete_all_objects(table()) :: true
  def delete_all_objects(table) do
    case Nif.table_delete_all_objects(table) do
      true -> true
      taken -> Nif.table_free_taken(taken)
    end
  end

  @doc """
  Atomically updates counters of the object under `key`, as
  `:ets.update_counter/3`: `incr` adds to the element after the key,
  `{pos, incr}` to element `pos`, `{pos, incr, threshold, set_value}` resets
  to `set_value` past `threshold`; a list applies each in order and returns
  the list of new values.
  """
  @spec update_counter(table(), term(), update_op() | [update_op()]) :: integer() | [integer()]
  def update_counter(table, key, op), do: Nif.table_update_counter(table, key, op)

  @doc """
  Like `update_counter/3`, but inserts `default` (with its key element
  replaced by `key`) first when no object has the key, as
  `:ets.update_counter/4`.
  """
  @spec update_counter(table(), term(), update_op() | [update_op()], object()) ::
          integer() | [integer()]
  def update_counter(table, key, op, default),
    do: Nif.table_update_counter_default(table, key, op, default)

  @doc """
  Atomically replaces elements of the object under `key`, as
  `:ets.update_element/3`. Returns `false` when there is no such object.
  """
  @spec update_element(table(), term(), {pos_integer(), term()} | [{pos_integer(), term()}]) ::
          boolean()
  def update_element(table, key, spec), do: Nif.table_update_element(table, key, spec)

  @doc """
  All objects of the table, as `:ets.tab2list/1`. Big tables are copied in
  chunks, so no scheduler is held for long.
  """
  @spec tab2list(table()) :: [object()]
  def tab2list(table) do
    # A table of more than one chunk is fixed meanwhile, as for the scans
    # of `NativeStore.Table.Match` (removals then do not reorder it).
    NativeStore.Table.Match.scan_fixed(table, fn -> walk_list(table) end)
  end

  defp walk_list(table) do
    case Nif.table_to_list(table) do
      {:done, list} -> list
      {:more, chunk, cursor} -> drain(cursor, [chunk])
    end
  end

  # Chunks come in traversal order; they are kept in a list and joined once.
  defp drain(cursor, chunks) do
    case Nif.cursor_next(cursor, []) do
      {:done, chunk} -> :lists.append(:lists.reverse([chunk | chunks]))
      {:more, chunk, next} -> drain(next, [chunk | chunks])
    end
  end

  @doc """
  The first key of the table, or `:"$end_of_table"` when it is empty, as
  `:ets.first/1`: the smallest key in term order for an `:ordered_set`, an
  unspecified one for the other types.

      iex> tab = NativeStore.Table.new(:first_doc, [:ordered_set])
      iex> NativeStore.Table.insert(tab, [{:b, 2}, {:a, 1}])
      iex> NativeStore.Table.first(tab)
      :a
  """
  @spec first(table()) :: term() | :"$end_of_table"
  def first(table), do: Nif.table_first(table)

  @doc """
  The key after `key`, or `:"$end_of_table"`, as `:ets.next/2`. For an
  `:ordered_set`, `key` need not be in the table (the next greater key is
  returned); for the other types it must be, or `ArgumentError` is raised
  (unless the table is fixed and `key` was deleted since it was fixed, see
  `safe_fixtable/2`).

      iex> tab = NativeStore.Table.new(:next_doc, [:ordered_set])
      iex> NativeStore.Table.insert(tab, [{1, :a}, {3, :c}])
      iex> NativeStore.Table.next(tab, 1)
      3
      iex> NativeStore.Table.next(tab, 2.5)
      3
      iex> NativeStore.Table.next(tab, 3)
      :"$end_of_table"
  """
  @spec next(table(), term()) :: term() | :"$end_of_table"
  def next(table, key), do: Nif.table_next(table, key)

  @doc """
  The last key of an `:ordered_set` (greatest in term order), or
  `:"$end_of_table"`, as `:ets.last/1`. On other table types it is
  `first/1`, as in ETS.
  """
  @spec last(table()) :: term() | :"$end_of_table"
  def last(table), do: Nif.table_last(table)

  @doc """
  The key before `key` in an `:ordered_set` (which need not hold `key`), or
  `:"$end_of_table"`, as `:ets.prev/2`. On other table types it is
  `next/2`, as in ETS.
  """
  @spec prev(table(), term()) :: term() | :"$end_of_table"
  def prev(table, key), do: Nif.table_prev(table, key)

  @doc """
  Information about the table as a keyword list, in `:ets.info/1`'s order,
  or `:undefined` when the table does not exist.
  """
  @spec info(table()) :: [{info_item(), term()}] | :undefined
  def info(table) do
    case Nif.table_info(table) do
      :undefined ->
        :undefined

      {id, dc, rc, wc, compressed, memory, owner, heir, name, size, named, type, keypos, prot} ->
        [
          id: id,
          decentralized_counters: dc,
          read_concurrency: rc,
          write_concurrency: wc,
          compressed: compressed,
          memory: memory,
          owner: owner,
          heir: heir,
          name: name,
          size: size,
          node: node(),
          named_table: named,
          type: type,
          keypos: keypos,
          protection: prot
        ]
    end
  end

  @info_items [
    :compressed,
    :decentralized_counters,
    :heir,
    :id,
    :keypos,
    :memory,
    :name,
    :named_table,
    :node,
    :owner,
    :protection,
    :read_concurrency,
    :size,
    :type,
    :write_concurrency
  ]

  @doc """
  One item of `info/1`, as `:ets.info/2`; `:undefined` when the table does
  not exist. Raises `ArgumentError` for an unknown item. `:stats` is, as
  in ETS, `false` for an `ordered_set` (with `write_concurrency`, `{route
  nodes, base nodes, route depth}` of its key-range parts: `{0, 1, 0}`
  until writers contend) and for hash tables `{buckets,
  mean_chain, std_dev, expected_std_dev, min_chain, max_chain, kept,
  locks}`, describing NativeStore's own buckets (a bucket holds one key's
  objects; `buckets` is the number of `slot/2` slots, `kept` the keys
  removed while the table is fixed, `locks` its 64 shards); it visits every
  bucket, on a dirty scheduler. `:binary` is always `[]`: the table
  refers to none of the VM's binaries (large binary values are kept in
  blocks of NativeStore's own, counted in `:memory`). `:size` and
  `:memory` of hash tables read per-shard counters without locking the
  table; an `ordered_set`'s read-lock each of its parts in turn.

  The fixation items (see `safe_fixtable/2`): `:fixed` is whether any
  process has the table fixed; `:safe_fixed` and
  `:safe_fixed_monotonic_time` are `false` or `{since, [{pid, count}]}`,
  `since` being when the table became fixed (an `:erlang.timestamp/0`
  triple, or `:erlang.monotonic_time/0`). The pids are listed in the order
  they first fixed the table (ETS's order is an internal one).
  """
  @spec info(table(), info_item()) :: term()
  def info(table, :size), do: Nif.table_count(table, true)
  def info(table, :memory), do: Nif.table_count(table, false)

  def info(table, :stats) do
    case Nif.table_stats(table) do
      # ETS's contention-adapting tree (an ordered_set with
      # write_concurrency) reports its route nodes, base nodes and route
      # depth: NativeStore's parts are its base nodes, found by a binary
      # search (a balanced route).
      parts when is_integer(parts) ->
        if info(table, :write_concurrency) == false,
          do: false,
          else: {parts - 1, parts, route_depth(parts, 0)}

      stats ->
        stats
    end
  end

  def info(table, item) when item in [:fixed, :safe_fixed, :safe_fixed_monotonic_time] do
    case {item, Nif.table_fixation(table)} do
      {_, :undefined} -> :undefined
      {:fixed, fixation} -> fixation != false
      {_, false} -> false
      {:safe_fixed_monotonic_time, fixation} -> fixation
      {:safe_fixed, {since, procs}} -> {timestamp(since), procs}
    end
  end

  def info(table, item) when item in @info_items do
    case info(table) do
      :undefined -> :undefined
      list -> Keyword.fetch!(list, item)
    end
  end

  # The VM's binaries the table refers to: none (large binary values live in
  # NativeStore's own blocks).
  # ETS raises for this item of a missing table.
  def info(table, :binary) do
    if Nif.table_count(table, true) == :undefined,
      do: raise(ArgumentError, "the table identifier does not refer to an existing table"),
      else: []
  end

  # As ETS: an unknown item of a missing table is `:undefined`.
  def info(table, item) do
    if Nif.table_count(table, true) == :undefined,
      do: :undefined,
      else: raise(ArgumentError, "unknown info item: #{inspect(item)}")
  end

  # The `:erlang.timestamp/0` triple of a monotonic time (as ETS reports it).
  defp timestamp(monotonic) do
    us = :erlang.convert_time_unit(monotonic + :erlang.time_offset(), :native, :microsecond)
    {div(us, 1_000_000_000_000), rem(div(us, 1_000_000), 1_000_000), rem(us, 1_000_000)}
  end

  @doc """
  The objects in slot `i` of the table, as `:ets.slot/2`: a table can be
  walked slot by slot from `0` until `:"$end_of_table"` (returned when `i`
  is the number of slots; a greater `i`, a negative one or a non-integer
  raises `ArgumentError`).

  For `:set`, `:bag` and `:duplicate_bag` tables the slots are the
  buckets of the table's shards, shard after shard: a slot holds the
  objects of at most one key (`[]` for an empty slot), and the number of
  slots changes when the table grows or shrinks, as in ETS (fix the table
  around a slot walk that other processes may write). For an
  `:ordered_set`, slot `i` is `[object]` for the `i`th object in key
  order (found by walking `i` objects, as in ETS).

      iex> tab = NativeStore.Table.new(:slot_doc, [:ordered_set])
      iex> NativeStore.Table.insert(tab, [{:b, 2}, {:a, 1}])
      iex> NativeStore.Table.slot(tab, 0)
      [{:a, 1}]
      iex> NativeStore.Table.slot(tab, 2)
      :"$end_of_table"
  """
  @spec slot(table(), non_neg_integer()) :: [object()] | :"$end_of_table"
  def slot(table, i) do
    # An ordered_set's slot `i` walks `i` objects: far in, the NIF asks for
    # its dirty-scheduler twin.
    case Nif.table_slot(table, i) do
      :dirty -> Nif.table_slot_dirty(table, i)
      objects -> objects
    end
  end

  @doc """
  Fixes (`true`) or releases (`false`) the table for the calling process,
  as `:ets.safe_fixtable/2`. Returns `true`.

  While a `:set`, `:bag` or `:duplicate_bag` table is fixed by any process,
  `next/2` also accepts a key deleted since the table became fixed and
  goes on from where that key was, so a `first/1`–`next/2` walk may delete
  the objects it visits, and a walk meets every object that stays exactly
  once while other processes insert and delete meanwhile, as in ETS (a
  fixed shard neither shrinks nor grows: new keys that do not fit go to an
  overflow table walked after it; the last `safe_fixtable(tab, false)`
  merges them back and shrinks what removals left sparse, on a dirty
  scheduler, and when a fixer's exit unfixes the table the shards' next
  writes do it). Fixations
  are counted per process (fix twice, release twice) and end when the
  process exits. An `:ordered_set` needs no fixing (its `next/2` accepts
  any key); fixing one only shows in `info/2`. Reading the table is enough
  to fix it (a `:private` table only by its owner).

  Scans that walk a table in more than one chunk (`select/2`,
  `select_count/2`, `select_delete/2`, `match_object/2`, `foldl/3`,
  `tab2list/1`...) fix it themselves meanwhile, as ETS does.

      iex> tab = NativeStore.Table.new(:fix_doc, [:public])
      iex> NativeStore.Table.insert(tab, for(i <- 1..100, do: {i}))
      iex> NativeStore.Table.safe_fixtable(tab, true)
      true
      iex> NativeStore.Table.info(tab, :fixed)
      true
      iex> walk = fn walk, k, n ->
      ...>   if k == :"$end_of_table" do
      ...>     n
      ...>   else
      ...>     NativeStore.Table.delete(tab, k)
      ...>     walk.(walk, NativeStore.Table.next(tab, k), n + 1)
      ...>   end
      ...> end
      iex> walk.(walk, NativeStore.Table.first(tab), 0)
      100
      iex> NativeStore.Table.safe_fixtable(tab, false)
      true
      iex> NativeStore.Table.info(tab, :safe_fixed)
      false
  """
  @spec safe_fixtable(table(), boolean()) :: true
  def safe_fixtable(table, fix) do
    case Nif.table_safe_fixtable(table, fix, :erlang.monotonic_time()) do
      true ->
        true

      # The last unfix: what the fixation held back (keys sent to overflow
      # tables, shards left sparse by removals) is put in order now, on a
      # dirty scheduler.
      :untidy ->
        Nif.table_tidy(table)
        true
    end
  end

  @doc """
  NativeStore extension (not in `:ets`): a compare-and-swap.

  Atomically replaces what is stored under `key` if it is still `expected`,
  which is what `lookup/2` returned (`[]` or `[object]`, compared with
  `=:=`). `new` is `[]` to delete or `[object]` to store (its key must be
  `key`). Returns whether it swapped. Build lock-free read-modify-write
  loops on it:

      iex> tab = NativeStore.Table.new(:cas_doc, [:public])
      iex> NativeStore.Table.replace(tab, :k, [], [{:k, 1}])
      true
      iex> NativeStore.Table.replace(tab, :k, [], [{:k, 2}])
      false
      iex> NativeStore.Table.replace(tab, :k, [{:k, 1}], [{:k, 2}])
      true
      iex> NativeStore.Table.lookup(tab, :k)
      [{:k, 2}]
  """
  @spec replace(table(), term(), [] | [object()], [] | [object()]) :: boolean()
  def replace(table, key, expected, new) when is_list(expected) and is_list(new),
    do: Nif.table_replace(table, key, expected, new)

  @doc """
  NativeStore extension (not in `:ets`): an atomic shallow map merge.

  The table holds `{key, map}` objects. Merges `map` into the stored map
  (`Map.merge(stored, map)`), or stores `{key, map}` when there is none,
  and returns the result, atomically: concurrent merges never lose a key.
  Raises `ArgumentError` when `map` or the stored value is not a map.

      iex> tab = NativeStore.Table.new(:merge_doc, [:public])
      iex> NativeStore.Table.merge_map(tab, "flow_1", %{a: 1})
      %{a: 1}
      iex> NativeStore.Table.merge_map(tab, "flow_1", %{b: 2, a: 0})
      %{a: 0, b: 2}
  """
  @spec merge_map(table(), term(), map()) :: map()
  def merge_map(table, key, map) when is_map(map), do: Nif.table_merge_map(table, key, map)

  def merge_map(_table, _key, map),
    do: raise(ArgumentError, "expected a map to merge, got: #{inspect(map)}")

  @doc """
  Makes `pid` the owner of the table and sends it
  `{:"ETS-TRANSFER", tid, self(), gift_data}`, as `:ets.give_away/3`. The
  caller must be the owner; `pid` must be a live local process other than
  the owner, else `ArgumentError`. The heir is not changed.
  """
  @spec give_away(table(), pid(), term()) :: true
  def give_away(table, pid, gift_data) when is_pid(pid),
    do: Nif.table_give_away(table, pid, gift_data)

  def give_away(_table, pid, _gift_data),
    do: raise(ArgumentError, "expected a pid, got: #{inspect(pid)}")

  @doc """
  Changes the heir or the protection, as `:ets.setopts/2`: `{:heir, pid,
  data}`, `{:heir, :none}` or `{:protection, :public | :protected |
  :private}`, or a list holding each kind at most once. The caller must be
  the owner. An heir that is not alive is recorded as none, as in ETS.
  """
  @spec setopts(
          table(),
          {:heir, pid(), term()} | {:heir, :none} | {:protection, atom()} | [tuple()]
        ) :: true
  def setopts(table, opts) when is_list(opts) do
    kinds = Enum.map(opts, &setopt_kind/1)

    # All valid and each kind once, or nothing changes (as in ETS).
    if Enum.uniq(kinds) != kinds or not Enum.all?(opts, &valid_setopt?/1),
      do: raise(ArgumentError, "invalid options for setopts/2: #{inspect(opts)}")

    Enum.each(opts, &setopts(table, &1))
    true
  end

  def setopts(table, {:heir, :none}), do: Nif.table_set_heir(table, :none, nil)

  def setopts(table, {:heir, pid, data}) when is_pid(pid) and node(pid) == node(),
    do: Nif.table_set_heir(table, pid, data)

  def setopts(table, {:protection, access}) when access in [:public, :protected, :private],
    do: Nif.table_set_protection(table, access)

  def setopts(_table, opt),
    do: raise(ArgumentError, "invalid NativeStore.Table option for setopts/2: #{inspect(opt)}")

  defp valid_setopt?({:heir, :none}), do: true
  defp valid_setopt?({:heir, pid, _}) when is_pid(pid) and node(pid) == node(), do: true
  defp valid_setopt?({:protection, a}) when a in [:public, :protected, :private], do: true
  defp valid_setopt?(_), do: false

  defp setopt_kind({kind, _}), do: kind
  defp setopt_kind({kind, _, _}), do: kind
  defp setopt_kind(other), do: other

  @doc """
  Renames a named table, as `:ets.rename/2`, and returns the new name;
  afterwards only the new name reaches it. For an unnamed table only the
  name reported by `info/2` changes and the table reference is returned (as
  ETS does). Raises `ArgumentError` when the name is taken.
  """
  @spec rename(table(), atom()) :: table()
  def rename(table, name) when is_atom(name), do: Nif.table_rename(table, name)

  def rename(_table, name),
    do: raise(ArgumentError, "expected an atom name, got: #{inspect(name)}")

  @doc "The reference of the named table `name`, or `:undefined`, as `:ets.whereis/1`."
  @spec whereis(atom()) :: reference() | :undefined
  def whereis(name) when is_atom(name), do: Nif.table_whereis(name)

  def whereis(name),
    do: raise(ArgumentError, "expected an atom name, got: #{inspect(name)}")

  @doc "All live NativeStore tables: names for named tables, references otherwise, as `:ets.all/0`."
  @spec all() :: [table()]
  def all, do: Nif.table_all()

  # -- Match specifications, selects and folds --

  @typedoc "A match specification, as in `:ets.select/2`: `[{head, guards, body}]`."
  @type match_spec :: [{tuple() | atom(), [term()], [term()]}]
  @typedoc "A continuation of `select/3`, `match/3` and friends, or `:\"$end_of_table\"`."
  @type continuation :: tuple() | :"$end_of_table"

  @doc """
  The results of the match specification `spec` over the table, as
  `:ets.select/2`. Raises `ArgumentError` for an invalid spec.

  A spec whose every clause binds the key (no variable or `:_` in the key
  position) looks those keys up instead of scanning; other specs scan the
  table in chunks, so no scheduler is held for long. Results come in key
  order for `:ordered_set` tables. Specs from `:ets.fun2ms/1` work as they
  are.

      iex> tab = NativeStore.Table.new(:select_doc, [])
      iex> NativeStore.Table.insert(tab, [{:a, 1}, {:b, 5}, {:c, 9}])
      iex> NativeStore.Table.select(tab, [{{:"$1", :"$2"}, [{:>, :"$2", 4}], [:"$1"]}]) |> Enum.sort()
      [:b, :c]
      iex> NativeStore.Table.select(tab, [{{:b, :"$1"}, [], [{{:"$1"}}]}])
      [{5}]
  """
  @spec select(table(), match_spec()) :: [term()]
  defdelegate select(table, spec), to: NativeStore.Table.Match

  @doc """
  Like `select/2`, but returns at most `limit` results and a continuation
  for `select/1`: `{results, continuation}` or `:"$end_of_table"`, as
  `:ets.select/3`.
  """
  @spec select(table(), match_spec(), pos_integer()) ::
          {[term()], continuation()} | :"$end_of_table"
  defdelegate select(table, spec, limit), to: NativeStore.Table.Match

  @doc "Continues a `select/3` (or `match/3`, `match_object/3`, `select_reverse/3`), as `:ets.select/1`."
  @spec select(continuation()) :: {[term()], continuation()} | :"$end_of_table"
  defdelegate select(continuation), to: NativeStore.Table.Match

  @doc """
  Like `select/2`, in reverse key order for `:ordered_set` tables (the
  same as `select/2` for other types), as `:ets.select_reverse/2`.
  """
  @spec select_reverse(table(), match_spec()) :: [term()]
  defdelegate select_reverse(table, spec), to: NativeStore.Table.Match

  @doc "Like `select/3`, in reverse key order for `:ordered_set` tables, as `:ets.select_reverse/3`."
  @spec select_reverse(table(), match_spec(), pos_integer()) ::
          {[term()], continuation()} | :"$end_of_table"
  defdelegate select_reverse(table, spec, limit), to: NativeStore.Table.Match

  @doc "Continues a `select_reverse/3`, as `:ets.select_reverse/1`."
  @spec select_reverse(continuation()) :: {[term()], continuation()} | :"$end_of_table"
  defdelegate select_reverse(continuation), to: NativeStore.Table.Match

  @doc "The number of objects for which `spec` returns `true`, as `:ets.select_count/2`."
  @spec select_count(table(), match_spec()) :: non_neg_integer()
  defdelegate select_count(table, spec), to: NativeStore.Table.Match

  @doc """
  Deletes the objects for which `spec` returns `true` and returns how many,
  as `:ets.select_delete/2`. Each object is deleted only if it is still the
  one that matched.
  """
  @spec select_delete(table(), match_spec()) :: non_neg_integer()
  defdelegate select_delete(table, spec), to: NativeStore.Table.Match

  @doc """
  Replaces each matching object by the spec's result and returns how many
  were replaced, as `:ets.select_replace/2`: atomically per object (an
  object changed meanwhile is left alone). The spec must keep the key
  (`ArgumentError` otherwise, and on bag tables).

      iex> tab = NativeStore.Table.new(:select_replace_doc, [])
      iex> NativeStore.Table.insert(tab, [{:a, 1}, {:b, 2}])
      iex> NativeStore.Table.select_replace(tab, [{{:"$1", :"$2"}, [], [{{:"$1", {:+, :"$2", 10}}}]}])
      2
      iex> NativeStore.Table.lookup(tab, :b)
      [{:b, 12}]
  """
  @spec select_replace(table(), match_spec()) :: non_neg_integer()
  defdelegate select_replace(table, spec), to: NativeStore.Table.Match

  @doc """
  The bindings of `pattern`'s variables (`:"$1"`, `:"$2"`, ...) for each
  matching object, as `:ets.match/2`.

      iex> tab = NativeStore.Table.new(:match_doc, [])
      iex> NativeStore.Table.insert(tab, [{:a, 1, :x}, {:b, 2, :y}])
      iex> NativeStore.Table.match(tab, {:"$1", :_, :y})
      [[:b]]
  """
  @spec match(table(), tuple() | atom()) :: [[term()]]
  defdelegate match(table, pattern), to: NativeStore.Table.Match

  @doc "Like `match/2`, `limit` results at a time, as `:ets.match/3`."
  @spec match(table(), tuple() | atom(), pos_integer()) ::
          {[[term()]], continuation()} | :"$end_of_table"
  defdelegate match(table, pattern, limit), to: NativeStore.Table.Match

  @doc "Continues a `match/3`, as `:ets.match/1`."
  @spec match(continuation()) :: {[[term()]], continuation()} | :"$end_of_table"
  defdelegate match(continuation), to: NativeStore.Table.Match

  @doc "The objects matching `pattern`, as `:ets.match_object/2`."
  @spec match_object(table(), tuple() | atom()) :: [object()]
  defdelegate match_object(table, pattern), to: NativeStore.Table.Match

  @doc "Like `match_object/2`, `limit` objects at a time, as `:ets.match_object/3`."
  @spec match_object(table(), tuple() | atom(), pos_integer()) ::
          {[object()], continuation()} | :"$end_of_table"
  defdelegate match_object(table, pattern, limit), to: NativeStore.Table.Match

  @doc "Continues a `match_object/3`, as `:ets.match_object/1`."
  @spec match_object(continuation()) :: {[object()], continuation()} | :"$end_of_table"
  defdelegate match_object(continuation), to: NativeStore.Table.Match

  @doc "Deletes the objects matching `pattern`, as `:ets.match_delete/2`."
  @spec match_delete(table(), tuple() | atom()) :: true
  defdelegate match_delete(table, pattern), to: NativeStore.Table.Match

  @doc """
  Folds `fun.(object, acc)` over the table, as `:ets.foldl/3` (in key order
  for `:ordered_set` tables). The table is read in chunks.

      iex> tab = NativeStore.Table.new(:foldl_doc, [])
      iex> NativeStore.Table.insert(tab, [{:a, 1}, {:b, 2}])
      iex> NativeStore.Table.foldl(fn {_k, v}, sum -> sum + v end, 0, tab)
      3
  """
  @spec foldl((object(), acc -> acc), acc, table()) :: acc when acc: term()
  defdelegate foldl(fun, acc, table), to: NativeStore.Table.Match

  @doc "Like `foldl/3`, in reverse key order for `:ordered_set` tables, as `:ets.foldr/3`."
  @spec foldr((object(), acc -> acc), acc, table()) :: acc when acc: term()
  defdelegate foldr(fun, acc, table), to: NativeStore.Table.Match

  # ---- file functions

  @typedoc "Options of `tab2file/3`, as in `:ets.tab2file/3`."
  @type tab2file_option :: {:extended_info, [:md5sum | :object_count]} | {:sync, boolean()}

  @doc """
  Dumps the table to `filename`, as `:ets.tab2file/2`: the same as
  `tab2file(table, filename, [])`.
  """
  @spec tab2file(table(), :file.name()) :: :ok | {:error, term()}
  def tab2file(table, filename), do: tab2file(table, filename, [])

  @doc """
  Dumps the table to `filename`, as `:ets.tab2file/3`, in ETS's file format
  (a `:disk_log` whose first term is the `info/1` header): `:ets.file2tab/1`
  reads it, and `file2tab/1` reads files written by `:ets.tab2file/2,3`.

  Options: `{:extended_info, [:object_count | :md5sum]}` appends the object
  count and/or an MD5 sum of the objects, checked by `file2tab/2` with
  `verify: true`; `{:sync, true}` syncs the file before returning.

  Returns `:ok` or `{:error, reason}` with ETS's reasons (`:badtab` for a
  table that does not exist, `{:unknown_option, opt}`, the `:disk_log`
  errors, ...); a table the caller may not read raises `ArgumentError`
  and leaves no file, as ETS does. As in ETS the file name is a charlist or
  an atom (a binary gives `{:error, {:badarg, _}}`, after deleting the
  file). As in ETS, the table is fixed (`safe_fixtable/2`) while it is
  written.
  """
  @spec tab2file(table(), :file.name(), [tab2file_option()]) :: :ok | {:error, term()}
  defdelegate tab2file(table, filename, options), to: NativeStore.Table.File

  @doc """
  Reads a file written by `tab2file/2,3` or `:ets.tab2file/2,3` into a new
  NativeStore table, as `:ets.file2tab/1`: the same as
  `file2tab(filename, [])`.
  """
  @spec file2tab(:file.name()) :: {:ok, table()} | {:error, term()}
  def file2tab(filename), do: file2tab(filename, [])

  @doc """
  Reads a file written by `tab2file/2,3` or `:ets.tab2file/2,3` into a new
  NativeStore table owned by the caller, as `:ets.file2tab/2`, and returns
  `{:ok, table}`. The table gets the name, type, protection, keypos,
  `named_table`, `compressed`, `read_concurrency` and `write_concurrency`
  recorded in the file header.

  With `{:verify, true}` the file is checked as ETS checks it: the MD5 sum
  and object count written with `:extended_info`, else the object count of
  the header. Errors are ETS's: `{:error, :cannot_create_table}` (e.g. a
  named table of that name exists), `{:error, :badfile}`,
  `{:error, :checksum_error}`, `{:error, :invalid_object_count}`,
  `{:error, {:read_error, reason}}` (missing or non-log file),
  `{:error, {:unknown_option, opt}}`. ETS's undocumented `{:table, tab}`
  option (load into an existing table) is supported too. The file name is
  a charlist or an atom, as in ETS. A header that cannot be decoded raises
  `ArgumentError` as in ETS; unlike ETS, the log is closed first (ETS leaves
  its `:disk_log` open).
  """
  @spec file2tab(:file.name(), [{:verify, boolean()}]) :: {:ok, table()} | {:error, term()}
  defdelegate file2tab(filename, options), to: NativeStore.Table.File

  @doc """
  The header of a file written by `tab2file/2,3` (or `:ets.tab2file/2,3`)
  without loading it, as `:ets.tabfile_info/1`: `{:ok, [name: _, type: _,
  protection: _, named_table: _, keypos: _, size: _, extended_info: _,
  version: {major, minor}]}` or `{:error, reason}`. As in ETS, the file name
  must be a charlist or an atom (`FunctionClauseError` otherwise).
  """
  @spec tabfile_info(:file.name()) :: {:ok, keyword()} | {:error, term()}
  defdelegate tabfile_info(filename), to: NativeStore.Table.File

  @doc """
  Fills the open `:dets` table `dets_table` with the objects of the table
  (after emptying it) and returns `dets_table`, as `:ets.to_dets/2`. Errors
  raise as in ETS (`ArgumentError` for a missing table or dets table).
  """
  @spec to_dets(table(), :dets.tab_name()) :: :dets.tab_name()
  defdelegate to_dets(table, dets_table), to: NativeStore.Table.File

  @doc """
  Inserts the objects of the open `:dets` table `dets_table` into the table
  and returns `true`, as `:ets.from_dets/2`. Errors raise as in ETS
  (`ArgumentError` for a missing table or dets table).
  """
  @spec from_dets(table(), :dets.tab_name()) :: true
  defdelegate from_dets(table, dets_table), to: NativeStore.Table.File

  # ---- extras

  @doc """
  Replaces the table's objects with those read from `init_fun`, as
  `:ets.init_table/2`: deletes every object, then calls `init_fun.(:read)`
  until it returns `:end_of_input`; each `{objects, next_fun}` inserts
  `objects` (each element as `insert/2` would) and continues with
  `next_fun.(:read)`. Returns `true`.

  As in ETS, any other return value exits with that value, and an object
  that cannot be inserted calls `next_fun.(:close)`, then exits with
  `{:badarg, stacktrace}` (the objects before it stay inserted). A table
  the caller cannot write raises `ArgumentError` before `init_fun` is
  called.

      iex> tab = NativeStore.Table.new(:init_table_doc, [:ordered_set])
      iex> NativeStore.Table.insert(tab, {:old, 0})
      iex> reader = fn
      ...>   :read -> {[{:a, 1}, {:b, 2}], fn :read -> :end_of_input end}
      ...> end
      iex> NativeStore.Table.init_table(tab, reader)
      true
      iex> NativeStore.Table.tab2list(tab)
      [{:a, 1}, {:b, 2}]
  """
  @spec init_table(table(), (:read | :close -> init_result)) :: true
        when init_result: :end_of_input | {[object()], (:read | :close -> term())} | term()
  defdelegate init_table(table, init_fun), to: NativeStore.Table.Extras

  @doc """
  A QLC query handle over the table, as `:ets.table/1`: `table(tab, [])`.

      iex> tab = NativeStore.Table.new(:qlc_doc, [:ordered_set])
      iex> NativeStore.Table.insert(tab, [{1, :a}, {2, :b}, {3, :c}])
      iex> h = :qlc.string_to_handle(~c"[V || {K, V} <- T, K > 1].", [], [T: NativeStore.Table.table(tab)])
      iex> :qlc.e(h)
      [:b, :c]
  """
  @spec table(table()) :: :qlc.query_handle()
  def table(table), do: NativeStore.Table.Extras.table(table, [])

  @doc """
  A QLC query handle over the table, as `:ets.table/2`, built with
  `:qlc.table/2` as ETS builds it: options `{:traverse, :select |
  {:select, match_spec} | :first_next | :last_prev}` (default `:select`) and
  `{:n_objects, pos_integer | :default}` (objects per `select/3` call,
  default 100); other options go to `:qlc.table/2`. QLC looks keys up with
  `lookup/2` when a query binds the key (not with `{:select, ms}`), and
  compares keys with `:"=:="` (`:==` for an `:ordered_set`). As in ETS,
  the table is fixed (`safe_fixtable/2`) while a query traverses it.
  """
  @spec table(table(), keyword() | tuple()) :: :qlc.query_handle()
  defdelegate table(table, options), to: NativeStore.Table.Extras

  @doc """
  Compiles a match specification, as `:ets.match_spec_compile/1` (which it
  calls: match specifications do not depend on the table store). Raises
  `ArgumentError` for an invalid one.

      iex> ms = NativeStore.Table.match_spec_compile([{{:"$1", :"$2"}, [{:>, :"$2", 1}], [:"$1"]}])
      iex> NativeStore.Table.match_spec_run([{:a, 1}, {:b, 2}], ms)
      [:b]
  """
  @spec match_spec_compile(match_spec()) :: :ets.compiled_match_spec()
  defdelegate match_spec_compile(spec), to: :ets

  @doc "Runs a compiled match specification over a list of terms, as `:ets.match_spec_run/2`."
  @spec match_spec_run([term()], :ets.compiled_match_spec()) :: [term()]
  defdelegate match_spec_run(list, compiled), to: :ets

  @doc """
  True when `term` is a compiled match specification, as
  `:ets.is_compiled_ms/1`.

      iex> NativeStore.Table.is_compiled_ms(NativeStore.Table.match_spec_compile([{:_, [], [true]}]))
      true
      iex> NativeStore.Table.is_compiled_ms([{:_, [], [true]}])
      false
  """
  @spec is_compiled_ms(term()) :: boolean()
  defdelegate is_compiled_ms(term), to: :ets

  @doc """
  Runs a match specification against one term, as `:ets.test_ms/2`:
  `{:ok, result}` (`false` when it does not match) or `{:error, errors}`.

      iex> NativeStore.Table.test_ms({:a, 5}, [{{:"$1", :"$2"}, [{:>, :"$2", 1}], [:"$1"]}])
      {:ok, :a}
  """
  @spec test_ms(tuple(), match_spec()) ::
          {:ok, term()} | {:error, [{:warning | :error, charlist()}]}
  defdelegate test_ms(term, spec), to: :ets

  @doc """
  Translates a fun into a match specification, as `:ets.fun2ms/1` (which
  it calls). As in ETS, the fun must come from Erlang's parse transform
  (`ms_transform`): an Erlang module compiled with
  `-include_lib("stdlib/include/ms_transform.hrl")`, or a fun evaluated by
  `:erl_eval` (the Erlang shell). An Elixir `fn` cannot be translated: ETS
  exits with `{:badarg, {:ets, :fun2ms, _}}`, and so does this function.

      iex> {:ok, tokens, _} = :erl_scan.string(~c"fun({K, V}) when V > 1 -> K end.")
      iex> {:ok, [expr]} = :erl_parse.parse_exprs(tokens)
      iex> {:value, fun, _} = :erl_eval.expr(expr, [])
      iex> NativeStore.Table.fun2ms(fun)
      [{{:"$1", :"$2"}, [{:>, :"$2", 1}], [:"$1"]}]
  """
  @spec fun2ms(function()) :: match_spec() | {:error, :transform_error}
  defdelegate fun2ms(fun), to: :ets

  @doc """
  Makes a continuation of `select/3`, `match/3`, `match_object/3` or
  `select_reverse/3` usable after it went through
  `:erlang.term_to_binary/1` and `:erlang.binary_to_term/1`, as
  `:ets.repair_continuation/2`: `spec` is the match specification that
  started it (`[{pattern, [], [:"$$"]}]` for `match/3`, `[{pattern, [],
  [:"$_"]}]` for `match_object/3`). A continuation whose compiled spec is
  still alive is returned unchanged; otherwise the spec is compiled again.
  The rest of a continuation (the table id, the position of the scan: a
  shard and bucket, or the last key of an `:ordered_set`) is plain data and
  survives the round trip as long as the table exists.
  """
  @spec repair_continuation(continuation(), match_spec()) :: continuation()
  defdelegate repair_continuation(continuation, spec), to: NativeStore.Table.Extras

  @doc """
  Prints a table of all NativeStore tables to standard output, as
  `:ets.i/0` (columns id, name, type, size, memory in words, owner: its
  registered name, or its pid). Returns `:ok`. `i/1,2,3` browse one table.
  """
  @spec i() :: :ok
  defdelegate i(), to: NativeStore.Table.Extras

  @doc """
  Browses the table on standard input and output, as `:ets.i/1,2,3` (the
  same code, on NativeStore.Table): pages of `height` objects (default
  40), lines cut to `width` characters (default 80), and ETS's commands
  read after each page: `c` continue, `q` quit, `p<N>` print object N,
  `k` delete the table, `/regexp` show only the objects whose printed form
  matches.
  """
  @spec i(table(), pos_integer(), pos_integer()) :: :ok
  def i(table, height \\ 40, width \\ 80),
    do: NativeStore.Table.Extras.i(table, height, width)

  # The depth of a balanced binary route over `parts` base nodes (see
  # `info/2`'s `:stats`).
  defp route_depth(parts, depth) when parts <= 1, do: depth
  defp route_depth(parts, depth), do: route_depth(div(parts + 1, 2), depth + 1)
end
