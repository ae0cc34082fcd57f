defmodule NativeStore.Registry do
  @moduledoc """
  A drop-in replacement for Elixir's `Registry`, kept in a Rust NIF.

  Same functions, options, results and errors as Elixir 1.14's `Registry`:
  replace `Registry` with `NativeStore.Registry` (also in `{:via, ...}`
  tuples and child specs). The entries live in the native engine, keyed by
  pid. A registered process is watched by a NIF process monitor: when it
  exits, its entries disappear at once (a lookup never returns it after its
  exit has been processed) without any message to an Elixir process and
  without links. No partition process sits on the registration path.

      iex> {:ok, _} = NativeStore.Registry.start_link(keys: :unique, name: DocUnique)
      iex> {:ok, _owner} = NativeStore.Registry.register(DocUnique, "user:1", %{role: :admin})
      iex> NativeStore.Registry.lookup(DocUnique, "user:1")
      [{self(), %{role: :admin}}]
      iex> {:error, {:already_registered, pid}} = NativeStore.Registry.register(DocUnique, "user:1", nil)
      iex> pid == self()
      true
      iex> NativeStore.Registry.update_value(DocUnique, "user:1", &Map.put(&1, :seen, true))
      {%{role: :admin, seen: true}, %{role: :admin}}

  Duplicate keys, for pub/sub:

      iex> {:ok, _} = NativeStore.Registry.start_link(keys: :duplicate, name: DocPubSub)
      iex> {:ok, _} = NativeStore.Registry.register(DocPubSub, "topic", 1)
      iex> {:ok, _} = NativeStore.Registry.register(DocPubSub, "topic", 2)
      iex> NativeStore.Registry.values(DocPubSub, "topic", self())
      [1, 2]
      iex> NativeStore.Registry.dispatch(DocPubSub, "topic", fn entries ->
      ...>   for {pid, n} <- entries, do: send(pid, {:news, n})
      ...> end)
      :ok
      iex> receive do: ({:news, 2} -> :got_it)
      :got_it
      iex> NativeStore.Registry.count_match(DocPubSub, "topic", :"$1", [{:>, :"$1", 1}])
      1

  Via names:

      iex> {:ok, _} = NativeStore.Registry.start_link(keys: :unique, name: DocVia)
      iex> {:ok, pid} = Agent.start_link(fn -> 0 end, name: {:via, NativeStore.Registry, {DocVia, :counter}})
      iex> NativeStore.Registry.whereis_name({DocVia, :counter}) == pid
      true

  ## Differences from Elixir's Registry

  * `:partitions` is accepted and validated but the native registry is not
    partitioned (it is sharded internally); `dispatch/4` calls the callback
    once with all entries, also with `parallel: true`.
  * Duplicate-key lookups always return entries in registration order.
  * `select/2` and `count_select/2` copy all entries (on a dirty scheduler)
    and run the match specification with `:ets.match_spec_run/2`.
  * `register/3` returns `{:ok, owner}` where `owner` is the registry's
    process (Elixir returns its partition's process).
  """

  import Kernel, except: [send: 2]
  alias NativeStore.Nif

  @typedoc "The registry name (an atom)."
  @type registry :: atom()
  @typedoc "The type of keys: `:unique` or `:duplicate`."
  @type keys :: :unique | :duplicate
  @typedoc "A registered key."
  @type key :: term()
  @typedoc "A registered value."
  @type value :: term()
  @typedoc "A metadata key."
  @type meta_key :: atom() | tuple()
  @typedoc "A metadata value."
  @type meta_value :: term()
  @typedoc "A match pattern on values, as in `Registry.match/4`."
  @type match_pattern :: atom() | term()
  @typedoc "Guards, as in `Registry.match/4`."
  @type guards :: [guard()]
  @typedoc "A guard expression."
  @type guard :: atom() | tuple()
  @typedoc "A match specification on `{key, pid, value}`, as in `Registry.select/2`."
  @type spec :: [{match_pattern(), guards(), [term()]}]
  @typedoc "Options of `start_link/1`."
  @type start_option ::
          {:keys, keys()}
          | {:name, registry()}
          | {:partitions, pos_integer()}
          | {:listeners, [atom()]}
          | {:meta, [{meta_key(), meta_value()}]}
          | {:compressed, boolean()}

  @doc """
  Starts a registry as a process registered under `:name`, as
  `Registry.start_link/1`. The registry is deleted when that process exits.
  """
  @spec start_link([start_option()]) :: {:ok, pid()} | {:error, term()}
  def start_link(options) do
    keys = Keyword.get(options, :keys)

    unless keys in [:unique, :duplicate] do
      raise ArgumentError,
            "expected :keys to be given and be one of :unique or :duplicate, got: #{inspect(keys)}"
    end

    name =
      case Keyword.fetch(options, :name) do
        {:ok, name} when is_atom(name) ->
          name

        {:ok, other} ->
          raise ArgumentError, "expected :name to be an atom, got: #{inspect(other)}"

        :error ->
          raise ArgumentError, "expected :name option to be present"
      end

    meta = Keyword.get(options, :meta, [])

    unless Keyword.keyword?(meta) do
      raise ArgumentError, "expected :meta to be a keyword list, got: #{inspect(meta)}"
    end

    partitions = Keyword.get(options, :partitions, 1)

    unless is_integer(partitions) and partitions >= 1 do
      raise ArgumentError,
            "expected :partitions to be a positive integer, got: #{inspect(partitions)}"
    end

    listeners = Keyword.get(options, :listeners, [])

    unless is_list(listeners) and Enum.all?(listeners, &is_atom/1) do
      raise ArgumentError,
            "expected :listeners to be a list of named processes, got: #{inspect(listeners)}"
    end

    compressed = Keyword.get(options, :compressed, false)

    unless is_boolean(compressed) do
      raise ArgumentError, "expected :compressed to be a boolean, got: #{inspect(compressed)}"
    end

    NativeStore.Registry.Owner.start_link(
      name: name,
      keys: keys,
      partitions: partitions,
      listeners: listeners,
      meta: meta
    )
  end

  @doc "A child specification, as `Registry.child_spec/1`."
  @spec child_spec([start_option()]) :: Supervisor.child_spec()
  def child_spec(options) do
    %{
      id: Keyword.get(options, :name, NativeStore.Registry),
      start: {NativeStore.Registry, :start_link, [options]},
      type: :supervisor
    }
  end

  defp unknown!(registry), do: raise(ArgumentError, "unknown registry: #{inspect(registry)}")

  @doc """
  Registers the calling process under `key` with `value`, as
  `Registry.register/3`. Returns `{:ok, owner}`, or
  `{:error, {:already_registered, pid}}` for a unique key held by a live
  process (a key held by a dead process is reclaimed). Listeners receive
  `{:register, registry, key, pid, value}`.
  """
  @spec register(registry(), key(), value()) ::
          {:ok, pid()} | {:error, {:already_registered, pid()}}
  def register(registry, key, value) when is_atom(registry) do
    case Nif.registry_register(registry, key, value) do
      {:ok, owner, listeners} ->
        for l <- listeners, do: Kernel.send(l, {:register, registry, key, self(), value})
        {:ok, owner}

      {:error, _} = error ->
        error

      :unknown_registry ->
        unknown!(registry)
    end
  end

  @doc """
  Removes every entry of the calling process under `key`, as
  `Registry.unregister/2`. Listeners receive `{:unregister, registry, key, pid}`.
  """
  @spec unregister(registry(), key()) :: :ok
  def unregister(registry, key) when is_atom(registry) do
    case Nif.registry_unregister(registry, key, :all) do
      :unknown_registry ->
        unknown!(registry)

      listeners ->
        for l <- listeners, do: Kernel.send(l, {:unregister, registry, key, self()})
        :ok
    end
  end

  @doc """
  Removes the calling process's entries under `key` whose value matches
  `pattern` and `guards`, as `Registry.unregister_match/4`.
  """
  @spec unregister_match(registry(), key(), match_pattern(), guards()) :: :ok
  def unregister_match(registry, key, pattern, guards \\ []) when is_list(guards) do
    # No registry guard here, as in Registry: a non-atom is an unknown registry.
    unless is_atom(registry), do: unknown!(registry)
    values = values(registry, key, self())
    ms = :ets.match_spec_compile([{pattern, guards, [:"$_"]}])

    # As Elixir's Registry: when every entry of the caller under `key` matches
    # (also when it has none) this is `unregister/2`, listeners included; a
    # partial removal notifies no listener.
    case :ets.match_spec_run(values, ms) do
      matched when length(matched) == length(values) ->
        unregister(registry, key)

      [] ->
        :ok

      matched ->
        case Nif.registry_unregister(registry, key, matched) do
          :unknown_registry -> unknown!(registry)
          _listeners -> :ok
        end
    end
  end

  @doc "The `{pid, value}` entries under `key`, as `Registry.lookup/2`."
  @spec lookup(registry(), key()) :: [{pid(), value()}]
  def lookup(registry, key) when is_atom(registry) do
    case Nif.registry_lookup(registry, key) do
      :unknown_registry -> unknown!(registry)
      entries -> entries
    end
  end

  @doc """
  The `{pid, value}` entries under `key` whose value matches `pattern` and
  `guards`, as `Registry.match/4`.
  """
  @spec match(registry(), key(), match_pattern(), guards()) :: [{pid(), value()}]
  def match(registry, key, pattern, guards \\ []) when is_atom(registry) and is_list(guards) do
    # Compiled first so that a bad pattern or guard raises as in Registry,
    # also when `key` has no entries.
    ms = :ets.match_spec_compile([{{:_, pattern}, guards, [:"$_"]}])

    case lookup(registry, key) do
      [] -> []
      entries -> :ets.match_spec_run(entries, ms)
    end
  end

  @doc "The number of entries under `key` matching `pattern` and `guards`, as `Registry.count_match/4`."
  @spec count_match(registry(), key(), match_pattern(), guards()) :: non_neg_integer()
  def count_match(registry, key, pattern, guards \\ [])
      when is_atom(registry) and is_list(guards),
      do: length(match(registry, key, pattern, guards))

  @doc "The keys registered by `pid`, once per registration, as `Registry.keys/2`."
  @spec keys(registry(), pid()) :: [key()]
  def keys(registry, pid) when is_atom(registry) and is_pid(pid) do
    case Nif.registry_keys(registry, pid) do
      :unknown_registry -> unknown!(registry)
      keys -> keys
    end
  end

  @doc "The values `pid` registered under `key`, as `Registry.values/3`."
  @spec values(registry(), key(), pid()) :: [value()]
  def values(registry, key, pid) when is_atom(registry) and is_pid(pid) do
    case Nif.registry_values(registry, key, pid) do
      :unknown_registry -> unknown!(registry)
      values -> values
    end
  end

  # As Registry: anything but a pid holds no value (the registry must exist).
  def values(registry, _key, _not_a_pid) when is_atom(registry) do
    _ = count(registry)
    []
  end

  @doc "The number of entries, as `Registry.count/1`."
  @spec count(registry()) :: non_neg_integer()
  def count(registry) when is_atom(registry) do
    case Nif.registry_count(registry) do
      :unknown_registry -> unknown!(registry)
      n -> n
    end
  end

  @doc """
  Runs a match specification over `{key, pid, value}` entries, as
  `Registry.select/2`.
  """
  @spec select(registry(), spec()) :: [term()]
  def select(registry, spec) when is_atom(registry) and is_list(spec) do
    ms = compile!(spec, "select/2")
    run_spec(all_entries(registry), ms)
  end

  @doc "The number of entries for which `spec` returns `true`, as `Registry.count_select/2`."
  @spec count_select(registry(), spec()) :: non_neg_integer()
  def count_select(registry, spec) when is_atom(registry) and is_list(spec) do
    ms = compile!(spec, "count_select/2")
    run_spec(all_entries(registry), ms) |> Enum.count(&(&1 == true))
  end

  # As Registry: every clause must match on a `{key, pid, value}` tuple; the
  # entries are run as `{key, {pid, value}}`, so `:"$_"` gives what Registry
  # gives.
  defp compile!(spec, fun) do
    spec =
      for part <- spec do
        case part do
          {{key, pid, value}, guards, body} ->
            {{key, {pid, value}}, guards, body}

          _ ->
            raise ArgumentError,
                  "invalid match specification in Registry.#{fun}: #{inspect(spec)}"
        end
      end

    case spec do
      [] -> nil
      spec -> :ets.match_spec_compile(spec)
    end
  end

  defp run_spec(_entries, nil), do: []
  defp run_spec(entries, ms), do: :ets.match_spec_run(entries, ms)

  defp all_entries(registry) do
    case Nif.registry_to_list(registry) do
      :unknown_registry -> unknown!(registry)
      entries -> for {key, pid, value} <- entries, do: {key, {pid, value}}
    end
  end

  @doc """
  Updates the value of the calling process's entry under a unique `key`, as
  `Registry.update_value/3`: returns `{new, old}`, or `:error` when the
  caller does not hold the key.
  """
  @spec update_value(registry(), key(), (value() -> value())) :: {value(), value()} | :error
  def update_value(registry, key, callback) when is_atom(registry) and is_function(callback, 1) do
    case Nif.registry_info(registry) do
      :unknown_registry ->
        unknown!(registry)

      {false, _, _, _} ->
        raise ArgumentError, "Registry.update_value/3 is not supported for duplicate registries"

      {true, _, _, _} ->
        case Nif.registry_own_value(registry, key) do
          {:ok, old} ->
            new = callback.(old)
            Nif.registry_put_value(registry, key, new)
            {new, old}

          :error ->
            :error
        end
    end
  end

  @doc """
  Calls `mfa_or_fun` with the `{pid, value}` entries under `key` (if any), as
  `Registry.dispatch/4`. Returns `:ok`.
  """
  @spec dispatch(
          registry(),
          key(),
          ([{pid(), value()}] -> term()) | {module(), atom(), [term()]},
          keyword()
        ) ::
          :ok
  # `opts` (`:parallel`) changes nothing with one partition, as in Registry.
  def dispatch(registry, key, mfa_or_fun, _opts \\ [])
      when is_atom(registry) and (is_function(mfa_or_fun, 1) or tuple_size(mfa_or_fun) == 3) do
    case lookup(registry, key) do
      [] -> :ok
      entries -> apply_dispatch(mfa_or_fun, entries)
    end

    :ok
  end

  defp apply_dispatch({m, f, a}, entries), do: apply(m, f, [entries | a])
  defp apply_dispatch(fun, entries) when is_function(fun, 1), do: fun.(entries)

  @doc """
  NativeStore extension (not in `Registry`): bytes of memory the registry
  holds in the native engine (tables, keys, values, process records),
  counted by walking it on a dirty scheduler.
  """
  @spec memory(registry()) :: non_neg_integer()
  def memory(registry) do
    case Nif.registry_memory(registry) do
      :unknown_registry -> unknown!(registry)
      bytes -> bytes
    end
  end

  @doc "Reads registry metadata, as `Registry.meta/2`."
  @spec meta(registry(), meta_key()) :: {:ok, meta_value()} | :error
  def meta(registry, key) when is_atom(registry) and (is_atom(key) or is_tuple(key)) do
    case Nif.registry_meta(registry, key) do
      :unknown_registry ->
        raise ArgumentError,
              "unknown registry: #{inspect(registry)}. Either the registry name is invalid or " <>
                "the registry is not running, possibly because its application isn't started"

      result ->
        result
    end
  end

  @doc "Stores registry metadata, as `Registry.put_meta/3`."
  @spec put_meta(registry(), meta_key(), meta_value()) :: :ok
  def put_meta(registry, key, value) when is_atom(registry) and (is_atom(key) or is_tuple(key)) do
    case Nif.registry_put_meta(registry, key, value) do
      :unknown_registry -> unknown!(registry)
      :ok -> :ok
    end
  end

  @doc "Deletes registry metadata, as `Registry.delete_meta/2`."
  @spec delete_meta(registry(), meta_key()) :: :ok
  def delete_meta(registry, key) when is_atom(registry) and (is_atom(key) or is_tuple(key)) do
    case Nif.registry_delete_meta(registry, key) do
      :unknown_registry -> unknown!(registry)
      :ok -> :ok
    end
  end

  # :via callbacks

  @doc "`:via` callback: registers the caller, as `Registry.register_name/2`."
  @spec register_name({registry(), key()} | {registry(), key(), value()}, pid()) :: :yes | :no
  def register_name({registry, key}, pid) when pid == self(),
    do: register_name({registry, key, nil}, pid)

  def register_name({registry, key, value}, pid) when pid == self() do
    case register(registry, key, value) do
      {:ok, _} -> :yes
      {:error, _} -> :no
    end
  end

  @doc "`:via` callback: the pid under a unique key or `:undefined`, as `Registry.whereis_name/1`."
  @spec whereis_name({registry(), key()} | {registry(), key(), value()}) :: pid() | :undefined
  def whereis_name({registry, key, _value}), do: whereis_name({registry, key})

  def whereis_name({registry, key}) do
    case Nif.registry_whereis(registry, key) do
      :unknown_registry -> unknown!(registry)
      :duplicate -> raise ArgumentError, ":via is not supported for duplicate registries"
      pid_or_undefined -> pid_or_undefined
    end
  end

  @doc "`:via` callback: unregisters the caller, as `Registry.unregister_name/1`."
  @spec unregister_name({registry(), key()} | {registry(), key(), value()}) :: :ok
  def unregister_name({registry, key, _value}), do: unregister(registry, key)
  def unregister_name({registry, key}), do: unregister(registry, key)

  @doc "`:via` callback: sends `msg` to the process under `key`, as `Registry.send/2`."
  @spec send({registry(), key()} | {registry(), key(), value()}, term()) :: :ok
  def send({registry, key, _value}, msg), do: __MODULE__.send({registry, key}, msg)

  def send({registry, key}, msg) do
    # As Registry: a lookup, so a duplicate key with exactly one entry works.
    case lookup(registry, key) do
      [{pid, _}] -> Kernel.send(pid, msg)
      _ -> :erlang.error(:badarg, [{registry, key}, msg])
    end
  end
end
