defmodule Malla.Service do
  @moduledoc """
  Malla services, each with its own ephemeral key-value storage.

  `use Malla.Service` turns a module into a service: it gains
  `start_link/0,1`, `stop/0` and `child_spec/1` (with `restart: :transient`),
  and runs as a process registered under the module's name. Options given
  to `use` are the service's default configuration; options given to
  `start_link/1` are merged over them.

  Each running service instance owns a `NativeStore.Table` created when it
  starts and destroyed when it stops or crashes: a restarted service starts
  empty. Any process may read and write it through `get/3`, `put/3`,
  `put_new/3` and `del/2`, which go straight to the table (no message to the
  service process). Calling them for a service that is not running raises
  `ArgumentError`.

      iex> defmodule MyDocService do
      ...>   use Malla.Service, greeting: "hello"
      ...> end
      iex> {:ok, pid} = MyDocService.start_link()
      iex> Process.whereis(MyDocService) == pid
      true
      iex> MyDocService.start_link()
      {:error, {:already_started, pid}}
      iex> Malla.Service.config(MyDocService)
      [greeting: "hello"]
      iex> Malla.Service.put(MyDocService, :my_key, "some_value")
      :ok
      iex> Malla.Service.get(MyDocService, :my_key, "default")
      "some_value"
      iex> Malla.Service.put_new(MyDocService, :my_key, "other")
      false
      iex> Malla.Service.del(MyDocService, :my_key)
      :ok
      iex> Malla.Service.get(MyDocService, :my_key, "default")
      "default"
      iex> MyDocService.stop()
      :ok
      iex> try do
      ...>   Malla.Service.get(MyDocService, :my_key)
      ...> rescue
      ...>   e in ArgumentError -> e.message =~ "is not running"
      ...> end
      true

  Under a supervisor, a service is a `:transient` child: it is restarted
  when it crashes, not when it is stopped with `stop/0`.

      children = [MyService, {OtherService, some: :option}]
      Supervisor.start_link(children, strategy: :one_for_one)
  """

  alias NativeStore.Table

  @typedoc "A service: the module that `use`s `Malla.Service`."
  @type service :: module()

  @doc false
  defmacro __using__(opts) do
    quote location: :keep do
      @malla_service_config unquote(opts)

      @doc "The configuration given to `use Malla.Service`."
      @spec __malla_service_config__() :: keyword()
      def __malla_service_config__, do: @malla_service_config

      @doc """
      Starts the service, registered under `#{inspect(__MODULE__)}`, linked
      to the caller. `opts` are merged over the options given to `use`.
      Returns `{:error, {:already_started, pid}}` when it already runs.
      """
      @spec start_link(keyword()) :: GenServer.on_start()
      def start_link(opts \\ []), do: Malla.Service.start_link(__MODULE__, opts)

      @doc "Stops the service, deleting its storage. See `Malla.Service.stop/1`."
      @spec stop() :: :ok | {:error, :not_running}
      def stop, do: Malla.Service.stop(__MODULE__)

      @doc "A child specification with `restart: :transient`."
      @spec child_spec(keyword()) :: Supervisor.child_spec()
      def child_spec(opts) do
        %{
          id: __MODULE__,
          start: {__MODULE__, :start_link, [opts]},
          restart: :transient,
          type: :worker
        }
      end

      defoverridable child_spec: 1
    end
  end

  @doc """
  Starts `service` (a module that `use`s `Malla.Service`) linked to the
  caller, registered under the module name, with a new, empty storage
  table. `opts` are merged over the options given to `use`.

  Returns `{:ok, pid}`, or `{:error, {:already_started, pid}}` when the
  service already runs.
  """
  @spec start_link(service(), keyword()) :: GenServer.on_start()
  def start_link(service, opts \\ []) when is_atom(service) and is_list(opts) do
    GenServer.start_link(Malla.Service.Server, {service, opts}, name: service)
  end

  @doc """
  Stops `service` normally and waits until it and its storage are gone.
  Returns `{:error, :not_running}` when it does not run.
  """
  @spec stop(service()) :: :ok | {:error, :not_running}
  def stop(service) when is_atom(service) do
    case Process.whereis(service) do
      nil ->
        {:error, :not_running}

      pid ->
        try do
          GenServer.stop(pid, :normal)
        catch
          :exit, {:noproc, _} -> {:error, :not_running}
        end
    end
  end

  @doc "The pid of `service`, or `nil` when it does not run."
  @spec whereis(service()) :: pid() | nil
  def whereis(service) when is_atom(service), do: Process.whereis(service)

  @doc """
  The configuration of the running `service`: the options given to `use`
  with those given to `start_link` merged over them. Raises `ArgumentError`
  when the service does not run.
  """
  @spec config(service()) :: keyword()
  def config(service) when is_atom(service) do
    GenServer.call(service, :config)
  catch
    :exit, {:noproc, _} -> not_running(service)
  end

  @doc """
  The value stored under `key` in the storage of `service`, or `default`.
  Raises `ArgumentError` when the service does not run.
  """
  @spec get(service(), term(), term()) :: term()
  def get(service, key, default \\ nil) do
    case Table.lookup(service, key) do
      [{_, value}] -> value
      [] -> default
    end
  rescue
    ArgumentError -> not_running(service)
  end

  @doc """
  Stores `value` under `key` in the storage of `service`, replacing any
  previous value. Raises `ArgumentError` when the service does not run.
  """
  @spec put(service(), term(), term()) :: :ok
  def put(service, key, value) do
    Table.insert(service, {key, value})
    :ok
  rescue
    ArgumentError -> not_running(service)
  end

  @doc """
  Stores `value` under `key` only if nothing is stored there; returns
  whether it stored. Raises `ArgumentError` when the service does not run.
  """
  @spec put_new(service(), term(), term()) :: boolean()
  def put_new(service, key, value) do
    Table.insert_new(service, {key, value})
  rescue
    ArgumentError -> not_running(service)
  end

  @doc """
  Deletes `key` from the storage of `service` (`:ok` even if absent).
  Raises `ArgumentError` when the service does not run.
  """
  @spec del(service(), term()) :: :ok
  def del(service, key) do
    Table.delete(service, key)
    :ok
  rescue
    ArgumentError -> not_running(service)
  end

  @spec not_running(term()) :: no_return()
  defp not_running(service) when is_atom(service),
    do: raise(ArgumentError, "service #{inspect(service)} is not running")

  defp not_running(service),
    do: raise(ArgumentError, "expected a service module, got: #{inspect(service)}")
end
