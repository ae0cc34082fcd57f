defmodule NativeStore.Application do
  @moduledoc false
  # Starts what the compatibility layers need: the PocketFlex state storage
  # and Malla's registries and configuration store.
  use Application

  @impl true
  def start(_type, _args) do
    children = [PocketFlex.Supervisor, Malla.Supervisor]
    Supervisor.start_link(children, strategy: :one_for_one, name: NativeStore.Supervisor)
  end
end
