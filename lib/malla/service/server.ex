defmodule Malla.Service.Server do
  @moduledoc false
  # The process of a running service: it owns the service's storage table,
  # so the table is deleted when the service stops or crashes.
  use GenServer

  alias NativeStore.Table

  @impl true
  def init({service, opts}) do
    config = Keyword.merge(service_config(service), opts)
    create_table(service, 50)
    {:ok, %{service: service, config: config}}
  end

  @impl true
  def handle_call(:config, _from, state), do: {:reply, state.config, state}

  defp service_config(service) do
    if Code.ensure_loaded?(service) and
         function_exported?(service, :__malla_service_config__, 0),
       do: service.__malla_service_config__(),
       else: []
  end

  # The table of a previous instance that has just exited may still be
  # being deleted (its owner's exit is processed asynchronously): wait for
  # it briefly, or take its place if its owner is gone.
  defp create_table(service, tries) do
    Table.new(service, [:set, :public, :named_table, {:read_concurrency, true}])
  rescue
    ArgumentError ->
      owner = Table.info(service, :owner)

      cond do
        tries > 0 and (owner == :undefined or not Process.alive?(owner)) ->
          if owner != :undefined, do: Process.sleep(1)
          create_table(service, tries - 1)

        tries == 0 and is_pid(owner) and not Process.alive?(owner) ->
          Table.delete(service)
          create_table(service, -1)

        true ->
          reraise ArgumentError,
                  "cannot create the storage of service #{inspect(service)}: " <>
                    "a NativeStore table named #{inspect(service)} exists, owned by #{inspect(owner)}",
                  __STACKTRACE__
      end
  end
end
