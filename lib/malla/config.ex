defmodule Malla.Config do
  @moduledoc """
  Node-wide configuration, shared by every service of the node.

  Values live under a `domain` and a `key` in a public `NativeStore.Table`
  started with the `:native_store` application. The store is local to the
  node (not distributed) and not persistent, but it survives service
  restarts and any number of crashes of Malla processes, one after the
  other: the table is owned by one of two keeper processes of
  `Malla.Supervisor` (a `NativeStore.Table.Keeper` pair) and names the
  other its heir. When the owner dies,
  the heir inherits the table with its data; when a keeper restarts, the
  current owner names it heir again (`NativeStore.Table.setopts/2`).

  Only losing both keepers at once loses the data: the heir dying (or
  still restarting) when the owner dies, or `Malla.Supervisor` (or the
  `:native_store` application) stopping. The table is then deleted, as an
  ETS table would be, and recreated empty.

      iex> Malla.Config.put(:my_app, :api_key, "secret_key")
      :ok
      iex> Malla.Config.get(:my_app, :api_key)
      "secret_key"
      iex> Malla.Config.get(:my_app, :missing, :default)
      :default
      iex> Malla.Config.increment(:my_app, :hits)
      1
      iex> Malla.Config.increment(:my_app, :hits, 10)
      11
      iex> Malla.Config.update(:my_app, :hits, fn n -> n * 2 end)
      :ok
      iex> Malla.Config.get(:my_app, :hits)
      22
      iex> Malla.Config.add(:my_app, :nodes, :a)
      :ok
      iex> Malla.Config.add(:my_app, :nodes, :b)
      :ok
      iex> Malla.Config.get(:my_app, :nodes)
      [:b, :a]
      iex> Malla.Config.add(:my_app, :api_key, :c)
      {:error, :invalid_value}
      iex> Malla.Config.del(:my_app, :nodes)
      :ok
      iex> Malla.Config.get(:my_app, :nodes)
      nil

  ## Concurrency

  Every function runs in the calling process: no process is in the path.
  `increment/3` is an atomic counter update in the table; `update/3` and
  `add/3` are compare-and-swap loops (`NativeStore.Table.replace/4`), so
  concurrent callers never lose an update. Under contention on one key,
  the function given to `update/3` may run more than once (only one of its
  results is stored per successful update): keep it free of side effects.
  """

  alias NativeStore.Table

  @table __MODULE__

  @doc false
  @spec table() :: atom()
  def table, do: @table

  @doc "The value stored under `domain` and `key`, or `default`."
  @spec get(term(), term(), term()) :: term()
  def get(domain, key, default \\ nil) do
    case Table.lookup(@table, {domain, key}) do
      [{_, value}] -> value
      [] -> default
    end
  end

  @doc "Stores `value` under `domain` and `key`, replacing any previous value."
  @spec put(term(), term(), term()) :: :ok
  def put(domain, key, value) do
    Table.insert(@table, {{domain, key}, value})
    :ok
  end

  @doc "Deletes the value under `domain` and `key` (`:ok` even if absent)."
  @spec del(term(), term()) :: :ok
  def del(domain, key) do
    Table.delete(@table, {domain, key})
    :ok
  end

  @doc """
  Atomically adds `by` to the integer under `domain` and `key` (starting
  from 0 when nothing is stored) and returns the new value. Raises
  `ArgumentError` when a value that is not an integer is stored.

      iex> Malla.Config.increment(:doc_incr, :n, 5)
      5
      iex> Malla.Config.increment(:doc_incr, :n, -2)
      3
  """
  @spec increment(term(), term(), integer()) :: integer()
  def increment(domain, key, by \\ 1)

  def increment(domain, key, by) when is_integer(by) do
    k = {domain, key}
    Table.update_counter(@table, k, by, {k, 0})
  end

  def increment(_domain, _key, by),
    do: raise(ArgumentError, "expected an integer increment, got: #{inspect(by)}")

  @doc """
  Atomically replaces the value under `domain` and `key` with
  `fun.(current)`, where `current` is the stored value or `nil`.

  `fun` may be called again if another process changed the value in the
  meantime; the stored result is always computed from the value it
  replaces, so no concurrent update is lost.

      iex> Malla.Config.update(:doc_update, :list, fn nil -> [1]; l -> [1 | l] end)
      :ok
      iex> Malla.Config.get(:doc_update, :list)
      [1]
  """
  @spec update(term(), term(), (term() -> term())) :: :ok
  def update(domain, key, fun) when is_function(fun, 1) do
    k = {domain, key}
    update_loop(k, Table.lookup(@table, k), fun)
  end

  def update(_domain, _key, fun),
    do: raise(ArgumentError, "expected a function of arity 1, got: #{inspect(fun)}")

  defp update_loop(k, current, fun) do
    value =
      case current do
        [{_, v}] -> v
        [] -> nil
      end

    new = [{k, fun.(value)}]

    if Table.replace(@table, k, current, new),
      do: :ok,
      else: update_loop(k, Table.lookup(@table, k), fun)
  end

  @doc """
  Atomically prepends `value` to the list under `domain` and `key` unless
  it is already a member; nothing stored counts as the empty list. Returns
  `{:error, :invalid_value}` when the stored value is not a list.

      iex> Malla.Config.add(:doc_add, :tags, :x)
      :ok
      iex> Malla.Config.add(:doc_add, :tags, :x)
      :ok
      iex> Malla.Config.get(:doc_add, :tags)
      [:x]
  """
  @spec add(term(), term(), term()) :: :ok | {:error, :invalid_value}
  def add(domain, key, value) do
    k = {domain, key}
    add_loop(k, Table.lookup(@table, k), value)
  end

  defp add_loop(k, current, value) do
    list =
      case current do
        [{_, list}] when is_list(list) -> list
        [] -> []
        [_] -> :invalid
      end

    cond do
      list == :invalid ->
        {:error, :invalid_value}

      value in list ->
        :ok

      Table.replace(@table, k, current, [{k, [value | list]}]) ->
        :ok

      true ->
        add_loop(k, Table.lookup(@table, k), value)
    end
  end
end
