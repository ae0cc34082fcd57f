defmodule Malla.Supervisor do
  @moduledoc false
  # Processes the Malla layer needs, started by the :native_store application:
  # the two keepers of the Malla.Config table (a NativeStore.Table.Keeper
  # pair, registered as Malla.Config.Heir and Malla.Config.Owner and started
  # in that order, so the owner can name the heir when it creates the table;
  # the names only say who holds what at start-up) and the two process
  # registries of Malla.Registry.
  use Supervisor

  @doc false
  def start_link(arg), do: Supervisor.start_link(__MODULE__, arg, name: __MODULE__)

  @impl true
  def init(_arg) do
    registry = Malla.Registry.registry()

    children =
      config_keepers() ++
        [
          {registry, keys: :unique, name: Malla.ProcRegistry},
          {registry, keys: :duplicate, name: Malla.ProcStore}
        ]

    # The keepers are tiny, restart in microseconds and only die when
    # killed; the table survives each of their crashes. Giving up on the
    # whole layer would stop both keepers and lose the table, so tolerate
    # many more restarts than the default.
    Supervisor.init(children, strategy: :one_for_one, max_restarts: 100, max_seconds: 5)
  end

  defp config_keepers do
    NativeStore.Table.Keeper.child_specs(
      table: Malla.Config.table(),
      table_opts: [:set, {:read_concurrency, true}],
      heir_data: :malla_config,
      names: {Malla.Config.Owner, Malla.Config.Heir}
    )
  end
end
