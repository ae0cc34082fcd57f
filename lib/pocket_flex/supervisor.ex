defmodule PocketFlex.Supervisor do
  @moduledoc false
  # Processes the PocketFlex layer needs, started by the :native_store application:
  #   * the ETS backend's server (owns :pocket_flex_shared_state);
  #   * the two keepers of the native backend's table (a
  #     NativeStore.Table.Keeper pair, registered as Native.Primary and
  #     Native.Secondary): the secondary starts first so that the primary
  #     can create the table naming it heir;
  #   * a Task.Supervisor for the item tasks of PocketFlex.AsyncBatchFlow.
  use Supervisor

  alias PocketFlex.StateStorage.Native

  @doc false
  def start_link(arg), do: Supervisor.start_link(__MODULE__, arg, name: __MODULE__)

  @impl true
  def init(_arg) do
    children =
      [PocketFlex.StateStorage.ETS] ++
        native_keepers() ++
        [{Task.Supervisor, name: PocketFlex.TaskSupervisor}]

    # Keeper restarts are cheap and the table survives each of them, while
    # giving up would stop both keepers and lose the table: allow many.
    Supervisor.init(children, strategy: :one_for_one, max_restarts: 100, max_seconds: 5)
  end

  defp native_keepers do
    NativeStore.Table.Keeper.child_specs(
      table: Native.table_name(),
      table_opts: [:set, {:read_concurrency, true}, {:write_concurrency, true}],
      heir_data: :pocket_flex,
      # Publishes the table reference, so calls skip the lookup of the name.
      on_table: {Native, :publish, []},
      names: {Native.Primary, Native.Secondary}
    )
  end
end
