defmodule NativeStore.RegistryTest do
  use ExUnit.Case, async: true

  alias NativeStore.Registry, as: NR

  # Each test gets fresh registry names; Elixir's Registry is the oracle.
  defp name(tag), do: :"nr_#{tag}_#{System.unique_integer([:positive])}"

  defp start(keys, opts \\ []) do
    n = name(keys)
    {:ok, pid} = NR.start_link([keys: keys, name: n] ++ opts)
    {n, pid}
  end

  # A process that runs `fun` (which may register), reports, then waits.
  defp holder(fun) do
    parent = self()

    pid =
      spawn(fn ->
        result = fun.()
        send(parent, {:held, self(), result})

        receive do
          {:exit, reason} -> exit(reason)
          :raise -> raise "boom"
        end
      end)

    receive do
      {:held, ^pid, result} -> {pid, result}
    after
      5_000 -> flunk("holder did not start")
    end
  end

  defp eventually(fun, deadline_ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + deadline_ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    if fun.() do
      :ok
    else
      if System.monotonic_time(:millisecond) > deadline do
        flunk("condition not reached before the deadline")
      else
        Process.sleep(2)
        do_eventually(fun, deadline)
      end
    end
  end

  defp error_of(fun) do
    fun.()
    :no_error
  rescue
    e -> {e.__struct__, Exception.message(e)}
  catch
    kind, value -> {kind, value}
  end

  describe "start_link/1 and child_spec/1 options" do
    @bad_options [
      [],
      [keys: :bad, name: :x],
      [keys: :unique],
      [keys: :unique, name: "x"],
      [keys: :duplicate, name: {:a}],
      [keys: :unique, name: :x, partitions: 0],
      [keys: :unique, name: :x, partitions: -1],
      [keys: :unique, name: :x, partitions: 1.0],
      [keys: :unique, name: :x, partitions: :a],
      [keys: :unique, name: :x, listeners: :a],
      [keys: :unique, name: :x, listeners: ["a"]],
      [keys: :unique, name: :x, listeners: [self()]],
      [keys: :unique, name: :x, meta: :a],
      [keys: :unique, name: :x, meta: [{"a", 1}]],
      [keys: :unique, name: :x, compressed: :a],
      [keys: :unique, name: :x, compressed: nil]
    ]

    test "bad options raise the same ArgumentError as Registry" do
      for opts <- @bad_options do
        expected = error_of(fn -> Registry.start_link(opts) end)
        assert {ArgumentError, _} = expected, "Registry accepted #{inspect(opts)}"
        assert error_of(fn -> NR.start_link(opts) end) == expected, inspect(opts)
      end
    end

    test "valid options start a registered process" do
      for keys <- [:unique, :duplicate],
          opts <- [
            [],
            [partitions: 1],
            [partitions: 4],
            [partitions: System.schedulers_online()],
            [compressed: true],
            [compressed: false],
            [listeners: []],
            [meta: [a: 1, b: {2}]]
          ] do
        n = name(:opts)
        assert {:ok, pid} = NR.start_link([keys: keys, name: n] ++ opts)
        assert Process.whereis(n) == pid
        assert NR.count(n) == 0
        assert {:ok, _} = NR.register(n, :k, 1)
        assert NR.lookup(n, :k) == [{self(), 1}]
        GenServer.stop(pid)
      end
    end

    test ":meta option is readable with meta/2" do
      {n, _} = start(:unique, meta: [custom: :meta, other: %{a: 1}])
      assert NR.meta(n, :custom) == {:ok, :meta}
      assert NR.meta(n, :other) == {:ok, %{a: 1}}
      assert NR.meta(n, :missing) == :error
    end

    test "a second start under the same name fails like Registry" do
      {n, pid} = start(:unique)
      assert NR.start_link(keys: :unique, name: n) == {:error, {:already_started, pid}}
    end

    test "child_spec/1 has Registry's shape" do
      opts = [keys: :unique, name: :some_name]
      spec = NR.child_spec(opts)
      assert %{spec | start: nil} == %{Registry.child_spec(opts) | start: nil}
      assert spec.start == {NR, :start_link, [opts]}
      assert spec.id == :some_name
      assert spec.type == :supervisor
    end

    test "starts under a supervisor and is deleted when the supervisor stops it" do
      n = name(:sup)
      {:ok, sup} = Supervisor.start_link([{NR, keys: :unique, name: n}], strategy: :one_for_one)
      assert {:ok, _} = NR.register(n, :a, 1)
      assert NR.lookup(n, :a) == [{self(), 1}]
      Supervisor.stop(sup)
      eventually(fn -> error_of(fn -> NR.lookup(n, :a) end) != :no_error end)

      assert error_of(fn -> NR.lookup(n, :a) end) ==
               {ArgumentError, "unknown registry: #{inspect(n)}"}
    end
  end

  describe "unknown registry" do
    test "every function raises the ArgumentError Registry raises" do
      calls = [
        fn m -> m.register(NoSuchReg, :k, 1) end,
        fn m -> m.unregister(NoSuchReg, :k) end,
        fn m -> m.unregister_match(NoSuchReg, :k, :_) end,
        fn m -> m.lookup(NoSuchReg, :k) end,
        fn m -> m.match(NoSuchReg, :k, :_) end,
        fn m -> m.keys(NoSuchReg, self()) end,
        fn m -> m.values(NoSuchReg, :k, self()) end,
        fn m -> m.count(NoSuchReg) end,
        fn m -> m.count_match(NoSuchReg, :k, :_) end,
        fn m -> m.select(NoSuchReg, [{{:"$1", :_, :_}, [], [:"$1"]}]) end,
        fn m -> m.count_select(NoSuchReg, [{{:_, :_, :_}, [], [true]}]) end,
        fn m -> m.update_value(NoSuchReg, :k, & &1) end,
        fn m -> m.dispatch(NoSuchReg, :k, fn _ -> :ok end) end,
        fn m -> m.meta(NoSuchReg, :k) end,
        fn m -> m.put_meta(NoSuchReg, :k, 1) end,
        fn m -> m.delete_meta(NoSuchReg, :k) end,
        fn m -> m.register_name({NoSuchReg, :k}, self()) end,
        fn m -> m.whereis_name({NoSuchReg, :k}) end,
        fn m -> m.unregister_name({NoSuchReg, :k}) end,
        fn m -> m.send({NoSuchReg, :k}, :msg) end
      ]

      for call <- calls do
        expected = error_of(fn -> call.(Registry) end)
        assert {ArgumentError, "unknown registry: NoSuchReg" <> _} = expected
        assert error_of(fn -> call.(NR) end) == expected
      end
    end

    test "a registry is unknown after its process stops (normal, shutdown, kill)" do
      for {how, keys} <- [normal: :unique, shutdown: :duplicate, kill: :unique] do
        {n, pid} = start(keys)
        Process.unlink(pid)
        {:ok, _} = NR.register(n, :k, :v)
        ref = Process.monitor(pid)
        if how == :normal, do: GenServer.stop(pid), else: Process.exit(pid, how)
        assert_receive {:DOWN, ^ref, _, _, _}, 5_000
        msg = "unknown registry: #{inspect(n)}"
        eventually(fn -> error_of(fn -> NR.count(n) end) == {ArgumentError, msg} end)
        assert error_of(fn -> NR.lookup(n, :k) end) == {ArgumentError, msg}
        assert Process.whereis(n) == nil
        # The name can be reused at once, with an empty registry.
        {:ok, _} = NR.start_link(keys: keys, name: n)
        assert NR.lookup(n, :k) == []
      end
    end
  end

  describe "unique keys" do
    test "register/3, lookup/2, already_registered" do
      {n, pid} = start(:unique)
      assert NR.lookup(n, "k") == []
      assert {:ok, owner} = NR.register(n, "k", :v)
      assert owner == pid
      assert NR.lookup(n, "k") == [{self(), :v}]
      assert NR.register(n, "k", :w) == {:error, {:already_registered, self()}}

      {other, result} = holder(fn -> NR.register(n, "k", :x) end)
      assert result == {:error, {:already_registered, self()}}
      assert NR.keys(n, other) == []
      assert NR.count(n) == 1
    end

    test "keys compare as in Registry (1 vs 1.0, 0.0 vs -0.0, maps, big binaries)" do
      {n, _} = start(:unique)
      {o, _} = start_oracle(:unique)

      keys =
        [1, 1.0, 0.0, -0.0, %{a: 1}, %{a: 1.0}, {1, {2, [3]}}] ++
          [:binary.copy("x", 1000), self(), make_ref(), [], ""]

      for k <- keys do
        assert shape(NR.register(n, k, {:v, k})) == shape(Registry.register(o, k, {:v, k}))
      end

      for k <- keys, do: assert(NR.lookup(n, k) == Registry.lookup(o, k))
      assert NR.count(n) == Registry.count(o)
      assert Enum.sort(NR.keys(n, self())) == Enum.sort(Registry.keys(o, self()))
    end

    test "unregister/2 removes only the caller's entry" do
      {n, _} = start(:unique)
      {other, {:ok, _}} = holder(fn -> NR.register(n, :theirs, 1) end)
      {:ok, _} = NR.register(n, :mine, 2)
      assert NR.unregister(n, :theirs) == :ok
      assert NR.lookup(n, :theirs) == [{other, 1}]
      assert NR.unregister(n, :mine) == :ok
      assert NR.lookup(n, :mine) == []
      assert NR.unregister(n, :never) == :ok
      assert {:ok, _} = NR.register(n, :mine, 3)
    end

    test "update_value/3" do
      {n, _} = start(:unique)
      assert NR.update_value(n, :k, &(&1 + 1)) == :error
      {:ok, _} = NR.register(n, :k, 1)
      assert NR.update_value(n, :k, &(&1 + 1)) == {2, 1}
      assert NR.lookup(n, :k) == [{self(), 2}]
      {_other, :error} = holder(fn -> NR.update_value(n, :k, &(&1 + 1)) end)
      assert NR.lookup(n, :k) == [{self(), 2}]
    end

    test "a key held by a killed process is reclaimable" do
      {n, _} = start(:unique)
      {pid, {:ok, _}} = holder(fn -> NR.register(n, :job, :first) end)
      Process.exit(pid, :kill)
      # Immediately after the kill, whether or not the down has run yet.
      eventually(fn -> match?({:ok, _}, NR.register(n, :job, :second)) end)
      assert NR.lookup(n, :job) == [{self(), :second}]
    end

    test "whereis_name/1, register_name/2, unregister_name/1, send/2" do
      {n, _} = start(:unique)
      assert NR.whereis_name({n, :a}) == :undefined
      assert NR.register_name({n, :a}, self()) == :yes
      assert NR.register_name({n, :a}, self()) == :no
      assert NR.whereis_name({n, :a}) == self()
      assert NR.register_name({n, :b, :value}, self()) == :yes
      assert NR.lookup(n, :b) == [{self(), :value}]
      assert NR.lookup(n, :a) == [{self(), nil}]
      assert NR.whereis_name({n, :b, :ignored}) == self()
      assert NR.send({n, :a}, :hello) == :hello
      assert_received :hello
      assert NR.send({n, :b, :v}, :hi) == :hi
      assert_received :hi
      assert NR.unregister_name({n, :a}) == :ok
      assert NR.unregister_name({n, :b, :v}) == :ok
      assert NR.whereis_name({n, :a}) == :undefined

      assert error_of(fn -> NR.send({n, :nope}, :x) end) ==
               error_of(fn ->
                 {r, _} = start_oracle(:unique)
                 Registry.send({r, :nope}, :x)
               end)

      assert_raise FunctionClauseError, fn -> NR.register_name({n, :c}, spawn(fn -> :ok end)) end
    end

    test "keys/2 rejects a non-pid and values/3 finds nothing for one, like Registry" do
      {n, _} = start(:unique)
      {:ok, _} = Registry.start_link(keys: :unique, name: :values_oracle)
      assert_raise FunctionClauseError, fn -> Registry.keys(:values_oracle, :not_a_pid) end
      assert_raise FunctionClauseError, fn -> NR.keys(n, :not_a_pid) end
      assert Registry.values(:values_oracle, :k, :not_a_pid) == []
      assert NR.values(n, :k, :not_a_pid) == []
      assert_raise ArgumentError, fn -> NR.values(:no_such_registry, :k, :not_a_pid) end
    end
  end

  describe "duplicate keys" do
    test "lookup/2 in registration order, values/3, keys/2" do
      {n, _} = start(:duplicate)
      {p1, _} = holder(fn -> NR.register(n, :topic, 1) end)
      {:ok, _} = NR.register(n, :topic, 2)
      {p3, _} = holder(fn -> NR.register(n, :topic, 3) end)
      {:ok, _} = NR.register(n, :topic, 2)
      {:ok, _} = NR.register(n, :other, 4)

      assert NR.lookup(n, :topic) == [{p1, 1}, {self(), 2}, {p3, 3}, {self(), 2}]
      assert NR.values(n, :topic, self()) == [2, 2]
      assert NR.values(n, :topic, p3) == [3]
      assert NR.values(n, :nope, self()) == []
      assert Enum.sort(NR.keys(n, self())) == [:other, :topic, :topic]
      assert NR.count(n) == 5
    end

    test "update_value/3 raises for duplicate registries" do
      {n, _} = start(:duplicate)
      {o, _} = start_oracle(:duplicate)
      expected = error_of(fn -> Registry.update_value(o, :k, & &1) end)

      assert expected ==
               {ArgumentError,
                "Registry.update_value/3 is not supported for duplicate registries"}

      assert error_of(fn -> NR.update_value(n, :k, & &1) end) == expected
    end

    test ":via is not supported" do
      {n, _} = start(:duplicate)
      {o, _} = start_oracle(:duplicate)
      expected = error_of(fn -> Registry.whereis_name({o, :k}) end)
      assert error_of(fn -> NR.whereis_name({n, :k}) end) == expected

      assert error_of(fn -> NR.send({n, :k}, :m) end) ==
               error_of(fn -> Registry.send({o, :k}, :m) end)

      # register_name registers (as Registry does).
      assert NR.register_name({n, :k}, self()) == Registry.register_name({o, :k}, self())
    end

    test "unregister/2 removes every entry of the caller under the key" do
      {n, _} = start(:duplicate)
      {p, _} = holder(fn -> NR.register(n, :k, :theirs) end)
      {:ok, _} = NR.register(n, :k, 1)
      {:ok, _} = NR.register(n, :k, 2)
      :ok = NR.unregister(n, :k)
      assert NR.lookup(n, :k) == [{p, :theirs}]
    end

    test "dispatch/3,4 with functions and MFAs, parallel or not" do
      {n, _} = start(:duplicate)
      parent = self()
      subs = for i <- 1..5, do: elem(holder(fn -> NR.register(n, "t", i) end), 0)

      assert NR.dispatch(n, "none", fn _ -> flunk("called for no entries") end) == :ok

      for opts <- [[], [parallel: true]] do
        assert :ok =
                 NR.dispatch(
                   n,
                   "t",
                   fn entries -> send(parent, {:entries, Enum.sort(entries)}) end,
                   opts
                 )

        assert_receive {:entries, entries}
        assert entries == Enum.sort(Enum.zip(subs, 1..5))
      end

      assert NR.dispatch(n, "t", {__MODULE__, :send_back, [parent]}) == :ok
      assert_receive {:mfa, entries}
      assert length(entries) == 5
    end
  end

  def send_back(entries, parent), do: send(parent, {:mfa, entries})

  defp start_oracle(keys, opts \\ []) do
    n = name(:oracle)
    {:ok, pid} = Registry.start_link([keys: keys, name: n] ++ opts)
    {n, pid}
  end

  describe "match, count_match, unregister_match, select, count_select (vs Registry)" do
    setup do
      for keys <- [:unique, :duplicate], into: %{} do
        {n, _} = start(keys)
        {o, _} = start_oracle(keys)
        {keys, {n, o}}
      end
    end

    defp both(fun, {n, o}), do: {fun.(Registry, o), fun.(NR, n)}

    defp populate(keys, {n, o}) do
      values = [1, 1.0, 2, {:a, 1}, {:a, 2}, %{x: 1}, "s"]

      for {v, i} <- Enum.with_index(values), mod <- [Registry, NR] do
        r = if mod == Registry, do: o, else: n
        key = if keys == :unique, do: {:k, i}, else: :k
        {:ok, _} = mod.register(r, key, v)
        if keys == :duplicate, do: {:ok, _} = mod.register(r, {:solo, i}, v)
      end
    end

    @patterns [
      {:_, []},
      {1, []},
      {:"$1", [{:is_integer, :"$1"}]},
      {:"$1", [{:==, :"$1", 1}]},
      {{:a, :"$1"}, [{:>, :"$1", 1}]},
      {{:a, :_}, []},
      {%{x: :"$1"}, []},
      {:"$1", [{:is_binary, :"$1"}]}
    ]

    test "match/3,4 and count_match/3,4", ctx do
      for keys <- [:unique, :duplicate] do
        pair = ctx[keys]
        populate(keys, pair)
        lookup_keys = if keys == :unique, do: for(i <- 0..7, do: {:k, i}), else: [:k, :none]

        for key <- lookup_keys, {pat, guards} <- @patterns do
          {a, b} = both(&Enum.sort(&1.match(&2, key, pat, guards)), pair)
          assert a == b, inspect({keys, key, pat, guards})
          {a, b} = both(& &1.count_match(&2, key, pat, guards), pair)
          assert a == b
        end

        {a, b} = both(& &1.match(&2, :k, :_), pair)
        assert Enum.sort(a) == Enum.sort(b)
        {a, b} = both(& &1.count_match(&2, :k, :_), pair)
        assert a == b

        # Bad guards raise ArgumentError in both, even for a missing key.
        for key <- [:k, :missing] do
          {a, b} = both(&error_of(fn -> &1.match(&2, key, :_, [{:bad}]) end), pair)
          assert {ArgumentError, _} = a
          assert {ArgumentError, _} = b
        end
      end
    end

    test "select/2 and count_select/2", ctx do
      specs = [
        [],
        [{{:"$1", :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}],
        [{{:"$1", :_, :_}, [], [:"$_"]}],
        [{{:"$1", :_, :_}, [], [:"$$"]}],
        [{{:_, :_, :"$1"}, [{:is_integer, :"$1"}], [:"$1"]}],
        [{{{:k, :"$1"}, :_, :_}, [{:>, :"$1", 3}], [:"$1"]}, {{:k, :_, :"$2"}, [], [:"$2"]}]
      ]

      count_specs = [
        [],
        [{{:_, :_, :_}, [], [true]}],
        [{{:_, :_, :"$1"}, [{:is_integer, :"$1"}], [true]}],
        [{{:_, :_, :"$1"}, [], [:"$1"]}]
      ]

      bad = [[{:_, [], [:"$_"]}], [{:bad}], [{{:_, :_}, [], [true]}]]

      for keys <- [:unique, :duplicate] do
        pair = ctx[keys]
        populate(keys, pair)

        for spec <- specs do
          {a, b} = both(&Enum.sort(&1.select(&2, spec)), pair)
          assert a == b, inspect({keys, spec})
        end

        for spec <- count_specs do
          {a, b} = both(& &1.count_select(&2, spec), pair)
          assert a == b, inspect({keys, spec})
        end

        for spec <- bad do
          {a, b} = both(&error_of(fn -> &1.select(&2, spec) end), pair)
          assert a == b
          {a, b} = both(&error_of(fn -> &1.count_select(&2, spec) end), pair)
          assert a == b
        end

        # Bad guards: ArgumentError in both.
        {a, b} =
          both(&error_of(fn -> &1.select(&2, [{{:_, :_, :_}, [{:bad}], [true]}]) end), pair)

        assert {ArgumentError, _} = a
        assert {ArgumentError, _} = b
      end
    end

    test "unregister_match/3,4", ctx do
      for keys <- [:unique, :duplicate] do
        pair = ctx[keys]
        populate(keys, pair)

        ops =
          if keys == :unique,
            do: [
              {{:k, 0}, 2, []},
              {{:k, 0}, 1, []},
              {{:k, 3}, {:a, :"$1"}, [{:>, :"$1", 0}]},
              {:nope, :_, []}
            ],
            else: [
              {:k, 5, []},
              {:k, {:a, :"$1"}, [{:>, :"$1", 1}]},
              {:k, :"$1", [{:is_integer, :"$1"}]},
              {:k, :_, []}
            ]

        for {key, pat, guards} <- ops do
          {a, b} = both(& &1.unregister_match(&2, key, pat, guards), pair)
          assert a == b
          {a, b} = both(&Enum.sort(&1.lookup(&2, key)), pair)
          assert a == b, inspect({keys, key, pat, guards})
          {a, b} = both(& &1.count(&2), pair)
          assert a == b
        end

        {a, b} = both(& &1.unregister_match(&2, {:k, 6}, "s"), pair)
        assert a == b
        {a, b} = both(&Enum.sort(&1.keys(&2, self())), pair)
        assert a == b
      end
    end
  end

  describe "listeners" do
    test "receive the same messages as Registry's listeners" do
      for keys <- [:unique, :duplicate] do
        nl = forwarder()
        ol = forwarder()
        {n, _} = start(keys, listeners: [nl])
        {o, _} = start_oracle(keys, listeners: [ol])

        script = fn mod, r ->
          {:ok, _} = mod.register(r, :a, 1)
          mod.register(r, :a, 2)
          {:ok, _} = mod.register(r, :b, 1)
          :ok = mod.unregister(r, :a)
          :ok = mod.unregister(r, :never)
          :ok = mod.unregister_match(r, :b, 2)
          :ok = mod.unregister_match(r, :b, 1)
          :ok = mod.unregister_match(r, :missing, :_)
          {:ok, _} = mod.register(r, :c, 1)
          if keys == :duplicate, do: {:ok, _} = mod.register(r, :c, 2)
          :ok = mod.unregister_match(r, :c, 2)
          # A process that dies: its entries go without any message.
          {pid, _} = holder(fn -> mod.register(r, :d, 1) end)
          ref = Process.monitor(pid)
          send(pid, {:exit, :kill})
          assert_receive {:DOWN, ^ref, _, _, _}, 5_000
          pid
        end

        p1 = script.(NR, n)
        p2 = script.(Registry, o)

        # Both listeners forward asynchronously: wait (up to 5 s on a loaded
        # machine) until both streams have arrived and stopped growing.
        forwarded = fn ->
          {:messages, msgs} = Process.info(self(), :messages)
          ours = for {:fwd, ^nl, m} <- msgs, do: m |> put_elem(1, :r) |> swap(p1)
          theirs = for {:fwd, ^ol, m} <- msgs, do: m |> put_elem(1, :r) |> swap(p2)
          {ours, theirs}
        end

        eventually(
          fn ->
            {ours, theirs} = forwarded.()
            Process.sleep(20)
            ours != [] and length(ours) == length(theirs) and forwarded.() == {ours, theirs}
          end,
          5_000
        )

        {ours, theirs} = forwarded.()
        assert ours == theirs
        assert [{:register, :r, :a, _, 1} | _] = ours
        flush()
      end
    end

    test "a listener registered under its name receives {:register, ...} / {:unregister, ...}" do
      parent = self()
      lname = name(:l)

      listener =
        spawn_link(fn ->
          Process.register(self(), lname)
          send(parent, :ready)
          loop = fn loop -> receive do: (m -> send(parent, {:got, m}) && loop.(loop)) end
          loop.(loop)
        end)

      assert_receive :ready
      {n, _} = start(:unique, listeners: [lname])
      {:ok, _} = NR.register(n, "x", :val)
      me = self()
      assert_receive {:got, {:register, ^n, "x", ^me, :val}}
      :ok = NR.unregister(n, "x")
      assert_receive {:got, {:unregister, ^n, "x", ^me}}
      Process.unlink(listener)
      Process.exit(listener, :kill)
    end
  end

  # A process registered under a fresh name that forwards what it receives.
  defp forwarder do
    parent = self()
    lname = name(:listener)

    spawn_link(fn ->
      Process.register(self(), lname)
      send(parent, {:ready, lname})
      loop = fn loop -> receive do: (m -> send(parent, {:fwd, lname, m}) && loop.(loop)) end
      loop.(loop)
    end)

    receive do: ({:ready, ^lname} -> lname)
  end

  defp shape({:ok, pid}) when is_pid(pid), do: :ok
  defp shape(other), do: other

  defp swap(tuple, pid),
    do:
      tuple |> Tuple.to_list() |> Enum.map(&if(&1 == pid, do: :dead, else: &1)) |> List.to_tuple()

  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end

  describe "meta" do
    test "meta/2, put_meta/3, delete_meta/2" do
      {n, _} = start(:unique)
      assert NR.meta(n, :a) == :error
      assert NR.put_meta(n, :a, 1) == :ok
      assert NR.put_meta(n, {:t, 1}, %{x: [1]}) == :ok
      assert NR.meta(n, :a) == {:ok, 1}
      assert NR.meta(n, {:t, 1}) == {:ok, %{x: [1]}}
      assert NR.put_meta(n, :a, 2) == :ok
      assert NR.meta(n, :a) == {:ok, 2}
      assert NR.delete_meta(n, :a) == :ok
      assert NR.delete_meta(n, :a) == :ok
      assert NR.meta(n, :a) == :error
    end

    test "non atom/tuple meta keys raise FunctionClauseError like Registry" do
      {n, _} = start(:unique)

      for f <- [&NR.meta(&1, "k"), &NR.put_meta(&1, "k", 1), &NR.delete_meta(&1, 1)] do
        assert_raise FunctionClauseError, fn -> f.(n) end
      end
    end
  end

  describe "cleanup of dead processes (NIF monitor)" do
    test "entries disappear after normal exit, crash, kill and shutdown" do
      for keys <- [:unique, :duplicate],
          how <- [:normal, :raise, :kill, :shutdown, {:custom, 1}] do
        {n, _} = start(keys)
        {:ok, _} = NR.register(n, :mine, 0)

        {pid, _} =
          holder(fn ->
            {:ok, _} = NR.register(n, :a, 1)
            {:ok, _} = NR.register(n, :b, 2)
            if keys == :duplicate, do: {:ok, _} = NR.register(n, :a, 3)
            NR.register(n, :mine, 4)
          end)

        expected = if keys == :duplicate, do: 5, else: 3
        assert NR.count(n) == expected
        ref = Process.monitor(pid)

        capture =
          ExUnit.CaptureLog.capture_log(fn ->
            case how do
              :raise -> send(pid, :raise)
              :kill -> Process.exit(pid, :kill)
              other -> send(pid, {:exit, other})
            end

            assert_receive {:DOWN, ^ref, _, _, _}, 5_000
          end)

        _ = capture
        eventually(fn -> NR.count(n) == 1 end)
        assert NR.lookup(n, :a) == []
        assert NR.lookup(n, :b) == []
        assert NR.keys(n, pid) == []
        assert NR.lookup(n, :mine) == [{self(), 0}]
      end
    end

    test "a dead process's entries go in every registry" do
      regs = for k <- [:unique, :duplicate, :unique], do: elem(start(k), 0)
      {pid, _} = holder(fn -> for r <- regs, do: {:ok, _} = NR.register(r, :k, r) end)
      assert Enum.map(regs, &NR.count/1) == [1, 1, 1]
      Process.exit(pid, :kill)
      eventually(fn -> Enum.map(regs, &NR.count/1) == [0, 0, 0] end)
    end

    test "no link is created with the registering process or the owner" do
      {n, owner} = start(:unique)
      {:links, before} = Process.info(self(), :links)
      {:ok, _} = NR.register(n, :k, 1)
      assert Process.info(self(), :links) == {:links, before}
      {:links, owner_links} = Process.info(owner, :links)
      assert owner_links == [self()]
    end

    test "a process with 100,000 registrations dies without a long schedule" do
      for keys <- [:unique, :duplicate] do
        {n, _} = start(keys)
        {:ok, _} = NR.register(n, :keep, 1)

        {pid, :ok} =
          holder(fn ->
            if keys == :unique do
              for i <- 1..100_000, do: {:ok, _} = NR.register(n, i, i)
            else
              for i <- 1..100_000, do: {:ok, _} = NR.register(n, rem(i, 100), i)
            end

            :ok
          end)

        assert NR.count(n) == 100_001
        ref = Process.monitor(pid)
        previous = :erlang.system_monitor(self(), [{:long_schedule, 20}])

        try do
          Process.exit(pid, :kill)
          assert_receive {:DOWN, ^ref, _, _, _}, 5_000
          eventually(fn -> NR.count(n) == 1 end, 10_000)
          Process.sleep(50)
        after
          :erlang.system_monitor(:undefined)
          _ = previous
        end

        {:messages, msgs} = Process.info(self(), :messages)
        # Other test modules run concurrently: only the dying process's own
        # schedules (its exit runs the NIF's down callback) are ours.
        long = for {:monitor, ^pid, :long_schedule, _} = m <- msgs, do: m
        assert long == [], "long schedules: #{inspect(long)}"
        assert NR.lookup(n, :keep) == [{self(), 1}]
        assert NR.lookup(n, 5) == []
      end
    end
  end

  describe "via names" do
    defmodule Counter do
      use GenServer
      def start_link(name), do: GenServer.start_link(__MODULE__, 0, name: name)
      def init(n), do: {:ok, n}
      def handle_call(:inc, _, n), do: {:reply, n + 1, n + 1}
    end

    test "GenServer with a :via name" do
      {n, _} = start(:unique)
      via = {:via, NR, {n, "counter"}}
      {:ok, pid} = Counter.start_link(via)
      assert NR.whereis_name({n, "counter"}) == pid
      assert GenServer.call(via, :inc) == 1
      assert GenServer.whereis(via) == pid
      assert Counter.start_link(via) == {:error, {:already_started, pid}}
      GenServer.stop(via)
      eventually(fn -> NR.whereis_name({n, "counter"}) == :undefined end)
      assert {:ok, pid2} = Counter.start_link(via)
      assert pid2 != pid
      GenServer.stop(pid2)
    end

    test "via name with a value" do
      {n, _} = start(:unique)
      {:ok, pid} = Counter.start_link({:via, NR, {n, "c", :some_value}})
      assert NR.lookup(n, "c") == [{pid, :some_value}]
      assert GenServer.call({:via, NR, {n, "c"}}, :inc) == 1
      GenServer.stop(pid)
    end

    test "DynamicSupervisor children under via names are cleaned up when they die" do
      {n, _} = start(:unique)
      {:ok, sup} = DynamicSupervisor.start_link(strategy: :one_for_one)

      pids =
        for i <- 1..20 do
          spec = %{
            id: Counter,
            start: {Counter, :start_link, [{:via, NR, {n, {:worker, i}}}]},
            restart: :transient
          }

          {:ok, pid} = DynamicSupervisor.start_child(sup, spec)
          pid
        end

      assert NR.count(n) == 20
      assert NR.whereis_name({n, {:worker, 3}}) == Enum.at(pids, 2)

      # A crash (restarted: the name is reclaimed by the new child).
      old = Enum.at(pids, 0)
      Process.exit(old, :kill)

      eventually(fn ->
        case NR.whereis_name({n, {:worker, 1}}) do
          pid when is_pid(pid) -> pid != old
          :undefined -> false
        end
      end)

      # Termination by the supervisor.
      :ok = DynamicSupervisor.terminate_child(sup, Enum.at(pids, 1))
      eventually(fn -> NR.whereis_name({n, {:worker, 2}}) == :undefined end)
      assert NR.count(n) == 19

      DynamicSupervisor.stop(sup)
      eventually(fn -> NR.count(n) == 0 end)
    end
  end

  test "every function agrees with Registry on registries that are not there" do
    spec = [{{:_, :_, :_}, [], [true]}]

    calls = [
      lookup: [:k],
      register: [:k, 1],
      unregister: [:k],
      unregister_match: [:k, :_],
      keys: [self()],
      values: [:k, self()],
      match: [:k, :_],
      count: [],
      count_match: [:k, :_],
      meta: [:m],
      put_meta: [:m, 1],
      delete_meta: [:m],
      select: [spec],
      count_select: [spec],
      update_value: [:k, &Function.identity/1],
      dispatch: [:k, fn _ -> :ok end]
    ]

    outcome = &NativeStore.Test.Differential.outcome/1

    for registry <- [:no_such_registry_sweep, "str", 123, make_ref()], {fun, args} <- calls do
      expected = outcome.(fn -> apply(Registry, fun, [registry | args]) end)
      actual = outcome.(fn -> apply(NativeStore.Registry, fun, [registry | args]) end)

      assert actual == expected,
             "#{fun}(#{inspect(registry)}, ...): #{inspect(actual)}, Registry #{inspect(expected)}"
    end
  end
end
