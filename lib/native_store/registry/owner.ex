defmodule NativeStore.Registry.Owner do
  @moduledoc false
  # The process a registry's name refers to. It owns the native registry:
  # when it exits, the NIF's monitor deletes the registry. It does no work on
  # the registration path.
  use GenServer

  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.fetch!(opts, :name))

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    unique = Keyword.fetch!(opts, :keys) == :unique
    partitions = Keyword.get(opts, :partitions, 1)
    listeners = Keyword.get(opts, :listeners, [])
    :ok = NativeStore.Nif.registry_new(name, unique, partitions, listeners)
    for {k, v} <- Keyword.get(opts, :meta, []), do: NativeStore.Nif.registry_put_meta(name, k, v)
    {:ok, name}
  end
end
