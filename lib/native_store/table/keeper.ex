defmodule NativeStore.Table.Keeper do
  @moduledoc """
  A pair of processes that keep a named, public `NativeStore.Table` alive
  across the crash of any single process.

  A table belongs to the process that created it and is deleted when that
  process exits, unless it names a live heir. A *keeper pair* is two small
  `GenServer`s, each registered under a name and knowing its peer's name.
  Whichever keeper owns the table, the other one is its heir:

    * **the owner dies**: the heir receives the table
      (`{:"ETS-TRANSFER", tab, from, heir_data}`) with all its data and
      becomes the owner; it names its peer heir as soon as the peer is back;
    * **a keeper (re)starts** and finds the table owned by its peer: it asks
      the peer, synchronously from `init/1`, to name it heir
      (`NativeStore.Table.setopts/2`). If the peer does not own the table
      yet (the old owner has just died and the transfer is still on its
      way), the peer names it heir when the transfer arrives;
    * **every `:check_interval` ms** each keeper checks the table: the owner
      re-names its live peer heir if the heir is not that peer (closing any
      remaining race), and a missing table is recreated, empty.

  So the table and its data survive any number of crashes of either keeper,
  and of any process using the table, one after the other.

  ### When the data is lost

  Only when both keepers are gone at once: the owner dies while the heir is
  dead or still restarting (not yet named heir: a window of microseconds),
  or the supervisor of the pair stops. The table is then deleted, as an ETS
  table would be, and the keepers (once running again) recreate it
  **empty**, logging a warning.

  ## Usage

  Put the two keepers under one supervisor with `child_specs/1`, which
  returns the secondary first: it starts before the primary so the primary
  can create the table naming it heir straight away. Keepers restart in
  microseconds and the table survives each of their crashes, while a
  supervisor giving up would stop both and lose the table: allow many
  restarts.

      children =
        NativeStore.Table.Keeper.child_specs(
          table: :my_cache,
          table_opts: [:set, {:read_concurrency, true}],
          names: {MyApp.CacheKeeperA, MyApp.CacheKeeperB}
        )

      Supervisor.start_link(children,
        strategy: :one_for_one,
        max_restarts: 100,
        max_seconds: 5
      )

  Any process then reads and writes `:my_cache` directly (the table is
  `:public` and `:named_table`); no keeper is in the path of a call.

      iex> alias NativeStore.Table
      iex> alias NativeStore.Table.Keeper
      iex> children =
      ...>   Keeper.child_specs(
      ...>     table: :keeper_doc_table,
      ...>     names: {KeeperDoc.A, KeeperDoc.B}
      ...>   )
      iex> {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      iex> Table.insert(:keeper_doc_table, {:answer, 42})
      true
      iex> owner = Table.info(:keeper_doc_table, :owner)
      iex> owner == Process.whereis(KeeperDoc.A)
      true
      iex> Table.info(:keeper_doc_table, :heir) == Process.whereis(KeeperDoc.B)
      true
      iex> ref = Process.monitor(owner)
      iex> Process.exit(owner, :kill)
      iex> receive do {:DOWN, ^ref, _, _, _} -> :ok end
      :ok
      iex> Table.lookup(:keeper_doc_table, :answer)
      [{:answer, 42}]
      iex> Supervisor.stop(sup)
      :ok

  ## Options

  Given to `child_specs/1` (which takes `:names`) or to `child_spec/1` and
  `start_link/1` (which take `:role`, `:name` and `:peer`):

    * `:table` (required) - the atom name of the table;
    * `:table_opts` - options for `NativeStore.Table.new/2` (type,
      `:read_concurrency`, `:write_concurrency`, `:keypos`, ...). The keeper
      adds `:public` and `:named_table`; `:protected`, `:private` and
      `{:heir, ...}` are rejected (the keepers manage the heir). Default: `[]`
      (a `:set`);
    * `:heir_data` - the data of `{:heir, pid, data}`, received in
      `{:"ETS-TRANSFER", ...}`. Default: the table name;
    * `:check_interval` - milliseconds between two checks of the table.
      Default: `200`;
    * `:on_table` - called in the keeper with the table reference whenever
      this keeper creates the table, finds it at start-up or inherits it
      (for example to cache the reference in `:persistent_term`): a
      function of arity 1, or `{module, function, args}` called as
      `apply(module, function, [ref | args])`. Default: none.

  The two keepers of a pair must be given the same options, except for the
  role and the names.
  """
  use GenServer
  require Logger

  alias NativeStore.Table

  @default_check_ms 200

  @typedoc """
  `:primary` creates the table at start-up; `:secondary` starts first and
  is named its heir. After that the roles are symmetric: either keeper may
  own the table.
  """
  @type role :: :primary | :secondary

  @typedoc "See \"Options\" in the moduledoc."
  @type option ::
          {:table, atom()}
          | {:table_opts, [NativeStore.Table.option()]}
          | {:heir_data, term()}
          | {:check_interval, pos_integer()}
          | {:on_table, (reference() -> term()) | {module(), atom(), [term()]}}

  @typedoc "Options of one keeper: the common options plus its role, name and peer."
  @type keeper_option :: option() | {:role, role()} | {:name, atom()} | {:peer, atom()}

  @doc """
  The child specs of a keeper pair, the secondary first: `names` is
  `{primary_name, secondary_name}`, the names the keepers are registered
  under (and their child ids). Other options: see the moduledoc.

      iex> [secondary, primary] =
      ...>   NativeStore.Table.Keeper.child_specs(table: :t, names: {T.A, T.B})
      iex> {secondary.id, primary.id}
      {T.B, T.A}
  """
  @spec child_specs([option() | {:names, {atom(), atom()}}]) :: [Supervisor.child_spec()]
  def child_specs(opts) when is_list(opts) do
    {primary, secondary} =
      case Keyword.fetch(opts, :names) do
        {:ok, {p, s}} when is_atom(p) and is_atom(s) and p != s ->
          {p, s}

        other ->
          raise ArgumentError,
                "expected :names to be {primary_name, secondary_name}, got: #{inspect(other)}"
      end

    common = Keyword.delete(opts, :names)

    [
      child_spec([role: :secondary, name: secondary, peer: primary] ++ common),
      child_spec([role: :primary, name: primary, peer: secondary] ++ common)
    ]
  end

  @doc """
  The child spec of one keeper: `:role`, `:name` (its registered name, also
  the child id) and `:peer` (the registered name of the other keeper) are
  required, plus the options of the moduledoc.
  """
  @spec child_spec([keeper_option()]) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    config = validate!(opts)
    %{id: config.name, start: {__MODULE__, :start_link, [opts]}}
  end

  @doc "Starts one keeper, linked to the caller (see `child_spec/1`)."
  @spec start_link([keeper_option()]) :: GenServer.on_start()
  def start_link(opts) when is_list(opts) do
    config = validate!(opts)
    GenServer.start_link(__MODULE__, config, name: config.name)
  end

  defp validate!(opts) do
    table = fetch!(opts, :table, &is_atom/1)
    role = fetch!(opts, :role, &(&1 in [:primary, :secondary]))
    name = fetch!(opts, :name, &is_atom/1)
    peer = fetch!(opts, :peer, &(is_atom(&1) and &1 != name))
    table_opts = Keyword.get(opts, :table_opts, [])
    check_ms = Keyword.get(opts, :check_interval, @default_check_ms)
    on_table = Keyword.get(opts, :on_table)

    unless is_list(table_opts) do
      raise ArgumentError, "expected :table_opts to be a list, got: #{inspect(table_opts)}"
    end

    for opt <- table_opts,
        opt in [:private, :protected] or match?({:heir, _, _}, opt) or opt == {:heir, :none} do
      raise ArgumentError,
            "#{inspect(opt)} is not allowed in :table_opts: a kept table is public " <>
              "and its heir is managed by the keepers"
    end

    unless is_integer(check_ms) and check_ms > 0 do
      raise ArgumentError,
            "expected :check_interval to be a positive integer, got: #{inspect(check_ms)}"
    end

    unless on_table == nil or is_function(on_table, 1) or
             match?({m, f, a} when is_atom(m) and is_atom(f) and is_list(a), on_table) do
      raise ArgumentError,
            "expected :on_table to be a function of arity 1 or {module, function, args}, " <>
              "got: #{inspect(on_table)}"
    end

    %{
      table: table,
      role: role,
      name: name,
      peer: peer,
      table_opts: (table_opts -- [:public, :named_table]) ++ [:public, :named_table],
      heir_data: Keyword.get(opts, :heir_data, table),
      check_ms: check_ms,
      on_table: on_table
    }
  end

  defp fetch!(opts, key, valid?) do
    case Keyword.fetch(opts, key) do
      {:ok, value} ->
        if valid?.(value),
          do: value,
          else: raise(ArgumentError, "invalid #{inspect(key)}: #{inspect(value)}")

      :error ->
        raise ArgumentError, "missing required option #{inspect(key)}"
    end
  end

  @impl true
  def init(config) do
    case Table.whereis(config.table) do
      # At start-up the secondary starts first and leaves creating the
      # table to the primary; any keeper that (re)starts to find it missing
      # while its peer runs recreates it.
      :undefined ->
        if config.role == :primary or alive(config.peer), do: create(config)

      ref ->
        notify(config, ref)
        ask_to_be_heir(config.peer)
    end

    schedule_check(config)
    {:ok, config}
  end

  @impl true
  def handle_call({:name_heir, pid}, _from, config) do
    # From the restarted peer. Only the owner can name an heir: if the
    # transfer from the dead owner has not reached us yet, we name the peer
    # when it arrives (handle_info below).
    {:reply, name_heir(config, pid), config}
  end

  @impl true
  def handle_info(:check, config) do
    check(config)
    schedule_check(config)
    {:noreply, config}
  end

  def handle_info({:"ETS-TRANSFER", ref, _from, _data}, config) do
    # The owner died: the table is ours, with its data. Name the peer heir
    # if it is back already (else it asks us when it restarts).
    notify(config, ref)
    if pid = alive(config.peer), do: name_heir(config, pid)
    {:noreply, config}
  end

  def handle_info(_msg, config), do: {:noreply, config}

  defp schedule_check(config), do: Process.send_after(self(), :check, config.check_ms)

  defp check(config) do
    case Table.info(config.table) do
      :undefined ->
        Logger.warning(
          "NativeStore.Table.Keeper: table #{inspect(config.table)} lost " <>
            "(both of its keepers died at once): recreating it empty"
        )

        create(config)

      info ->
        peer = alive(config.peer)

        if info[:owner] == self() and peer != nil and info[:heir] != peer,
          do: name_heir(config, peer)
    end

    :ok
  end

  defp create(config) do
    heir =
      case alive(config.peer) do
        nil -> []
        pid -> [{:heir, pid, config.heir_data}]
      end

    try do
      Table.new(config.table, config.table_opts ++ heir)
    rescue
      # Created meanwhile by the peer, which names us heir (when we ask, or
      # at its next check).
      ArgumentError -> :exists
    else
      _ -> notify(config, Table.whereis(config.table))
    end

    :ok
  end

  defp notify(%{on_table: nil}, _ref), do: :ok
  defp notify(_config, :undefined), do: :ok
  defp notify(%{on_table: fun}, ref) when is_function(fun, 1), do: fun.(ref)
  defp notify(%{on_table: {m, f, a}}, ref), do: apply(m, f, [ref | a])

  defp ask_to_be_heir(peer) do
    case alive(peer) do
      nil -> :ok
      pid -> GenServer.call(pid, {:name_heir, self()}, 1_000)
    end
  catch
    # The peer died meanwhile; if the table survives, the checks fix it.
    :exit, _ -> :ok
  end

  # Runs in the owner (setopts/2 raises ArgumentError for anyone else).
  defp name_heir(config, pid) when pid != self() do
    Table.setopts(config.table, {:heir, pid, config.heir_data})
    :ok
  rescue
    ArgumentError -> :not_owner
  end

  defp name_heir(_config, _self), do: :ok

  defp alive(name) do
    case Process.whereis(name) do
      pid when is_pid(pid) and pid != self() -> if Process.alive?(pid), do: pid
      _ -> nil
    end
  end
end
