defmodule Malla.Registry do
  @moduledoc """
  Process registration for Malla: unique names and duplicate stores, kept
  in `NativeStore.Registry`.

  Two registries are started with the `:native_store` application:
  `Malla.ProcRegistry`, with unique keys, for named singleton processes,
  and `Malla.ProcStore`, with duplicate keys, where any number of
  processes (or one process many times) store values under a key, e.g. the
  workers of a pool. Entries vanish when their process dies.

  Unique names, usable as GenServer names through `via/1`:

      iex> {:ok, pid} = Agent.start(fn -> 0 end, name: Malla.Registry.via("doc_worker"))
      iex> Malla.Registry.whereis("doc_worker") == pid
      true
      iex> Agent.start(fn -> 0 end, name: Malla.Registry.via("doc_worker"))
      {:error, {:already_started, pid}}
      iex> Agent.get(Malla.Registry.via("doc_worker"), & &1)
      0
      iex> Agent.stop(pid)
      :ok

  The calling process can also register itself:

      iex> {:ok, _} = Malla.Registry.register(:doc_singleton, %{role: :leader})
      iex> Malla.Registry.lookup(:doc_singleton) == {self(), %{role: :leader}}
      true
      iex> {:error, {:already_registered, pid}} = Malla.Registry.register(:doc_singleton)
      iex> pid == self()
      true
      iex> Malla.Registry.unregister(:doc_singleton)
      :ok

  Duplicate stores:

      iex> {:ok, _} = Malla.Registry.store(:doc_pool, %{worker_id: 1})
      iex> {:ok, _} = Malla.Registry.store(:doc_pool, %{worker_id: 2})
      iex> Malla.Registry.values(:doc_pool) |> Enum.map(fn {_pid, v} -> v end) |> Enum.sort()
      [%{worker_id: 1}, %{worker_id: 2}]
      iex> Malla.Registry.count(:doc_pool, %{worker_id: :"$1"}, [{:>, :"$1", 1}])
      1
      iex> Malla.Registry.unstore(:doc_pool)
      :ok
      iex> Malla.Registry.values(:doc_pool)
      []
  """

  # The registry implementation: any module with Elixir's `Registry` API
  # (Elixir's own `Registry` works too; switch this one line).
  @registry NativeStore.Registry
  @unique Malla.ProcRegistry
  @store Malla.ProcStore

  @doc false
  @spec registry() :: module()
  def registry, do: @registry

  @doc """
  A `:via` name for `key` in `Malla.ProcRegistry`, to name a GenServer,
  Agent, Task... with: `GenServer.start_link(MyWorker, [], name: via(key))`.
  """
  @spec via(term()) :: {:via, module(), {atom(), term()}}
  def via(key), do: {:via, @registry, {@unique, key}}

  @doc """
  Registers the calling process under the unique `key`, with `value`.
  Returns `{:error, {:already_registered, pid}}` when `key` is taken.
  """
  @spec register(term(), term()) :: {:ok, pid()} | {:error, {:already_registered, pid()}}
  def register(key, value \\ nil), do: @registry.register(@unique, key, value)

  @doc "Unregisters the calling process from the unique `key`; `:ok` even if it was not."
  @spec unregister(term()) :: :ok
  def unregister(key), do: @registry.unregister(@unique, key)

  @doc "The pid registered under the unique `key`, or `nil`."
  @spec whereis(term()) :: pid() | nil
  def whereis(key) do
    case @registry.lookup(@unique, key) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  @doc "`{pid, value}` registered under the unique `key`, or `nil`."
  @spec lookup(term()) :: {pid(), term()} | nil
  def lookup(key) do
    case @registry.lookup(@unique, key) do
      [entry] -> entry
      [] -> nil
    end
  end

  @doc """
  Stores `value` under `key` in `Malla.ProcStore` for the calling process.
  A process may store the same key many times.
  """
  @spec store(term(), term()) :: {:ok, pid()}
  def store(key, value \\ nil), do: @registry.register(@store, key, value)

  @doc "Removes every value the calling process stored under `key`."
  @spec unstore(term()) :: :ok
  def unstore(key), do: @registry.unregister(@store, key)

  @doc "All `{pid, value}` stored under `key`, by any process."
  @spec values(term()) :: [{pid(), term()}]
  def values(key), do: @registry.lookup(@store, key)

  @doc """
  The `{pid, value}` stored under `key` whose value matches `pattern` and
  `guards`, as in `Registry.match/4`.
  """
  @spec values(term(), term(), list()) :: [{pid(), term()}]
  def values(key, pattern, guards \\ []), do: @registry.match(@store, key, pattern, guards)

  @doc """
  How many values are stored under `key` that match `pattern` (all by
  default) and `guards`, as in `Registry.count_match/4`.
  """
  @spec count(term(), term(), list()) :: non_neg_integer()
  def count(key, pattern \\ :_, guards \\ []),
    do: @registry.count_match(@store, key, pattern, guards)
end
