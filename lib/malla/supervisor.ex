defmodule Malla.Supervisor do
  @moduledoc false
  # Processes the Malla layer needs, started by the :native_store application.
  use Supervisor

  @doc false
  def start_link(arg), do: Supervisor.start_link(__MODULE__, arg, name: __MODULE__)

  @impl true
  def init(_arg) do
    children = []
    Supervisor.init(children, strategy: :one_for_one)
  end
end
