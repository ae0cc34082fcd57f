defmodule NativeStore.Table.Extras do
  @moduledoc false
  # The ETS functions built on the rest of `NativeStore.Table`:
  # `init_table/2`, `table/1,2` (QLC), `repair_continuation/2` and `i/0`.
  # Each mirrors the code of OTP's `ets` module (stdlib), with `:ets` calls
  # replaced by `NativeStore.Table` ones.

  alias NativeStore.Table

  # The tag of NativeStore's select continuations (see
  # `NativeStore.Table.Match`): `{tag, tab, compiled_ms, limit, buffer, source}`.
  @cont_tag :"$native_store_select"

  # ------------------------------------------------------------------
  # init_table

  def init_table(tab, init_fun) do
    Table.delete_all_objects(tab)
    init_table_continue(tab, init_fun.(:read))
  end

  defp init_table_continue(_tab, :end_of_input), do: true

  defp init_table_continue(tab, {list, fun}) when is_list(list) and is_function(fun) do
    case insert_all(tab, list) do
      {:EXIT, reason} ->
        try do
          fun.(:close)
        catch
          _, _ -> :ok
        end

        exit(reason)

      true ->
        init_table_continue(tab, fun.(:read))
    end
  end

  defp init_table_continue(_tab, error), do: exit(error)

  # ETS inserts the objects one by one (`ets:insert/2` of each element, so
  # an element may itself be a list of objects), inside a `catch`: an error
  # exits with `{reason, stacktrace}` after the objects before it are in.
  # The whole list is tried at once first (a list insert checks every object
  # before storing any); when it fails, one by one gives ETS's partial result.
  defp insert_all(_tab, []), do: true

  defp insert_all(tab, list) do
    Table.insert(tab, list)
  catch
    :error, _ -> insert_each(tab, list)
  end

  defp insert_each(tab, list) do
    Enum.each(list, &Table.insert(tab, &1))
    true
  catch
    :error, reason -> {:EXIT, {reason, __STACKTRACE__}}
    :exit, reason -> {:EXIT, reason}
  end

  # ------------------------------------------------------------------
  # table (QLC)

  def table(tab, opts) do
    case options(opts, [:traverse, :n_objects]) do
      {:badarg, _} ->
        raise ArgumentError, "invalid options for table/2: #{inspect(opts)}"

      [[traverse, n_objs], qlc_options] ->
        type = Table.info(tab, :type)

        tf =
          case traverse do
            :first_next ->
              fn -> qlc_next(tab, Table.first(tab)) end

            :last_prev ->
              fn -> qlc_prev(tab, Table.last(tab)) end

            :select ->
              fn ms -> qlc_select(Table.select(tab, ms, n_objs)) end

            {:select, ms} ->
              fn -> qlc_select(Table.select(tab, ms, n_objs)) end
          end

        info_fun = fn tag -> table_info(tab, tag) end

        key_equality =
          case type do
            :ordered_set -> :==
            _ -> :"=:="
          end

        lookup_fun =
          case traverse do
            {:select, _ms} ->
              :undefined

            _ ->
              fn
                _pos, [k] -> Table.lookup(tab, k)
                _pos, ks -> :lists.flatmap(&Table.lookup(tab, &1), ks)
              end
          end

        format_fun = fn
          {:all, _n_elements, _element_fun} ->
            {Table, :table, [tab | if(opts != [], do: [opts], else: [])]}

          {:match_spec, ms} ->
            {Table, :table, [tab, [{:traverse, {:select, ms}} | listify(opts)]]}

          {:lookup, _key_pos, [value], _n_elements, element_fun} ->
            :io_lib.format(~c"~w:lookup(~w, ~w)", [Table, tab, element_fun.(value)])

          {:lookup, _key_pos, values, _n_elements, element_fun} ->
            vals = for v <- values, do: element_fun.(v)

            :io_lib.format(
              ~c"lists:flatmap(fun(V) -> ~w:lookup(~w, V) end, ~w)",
              [Table, tab, vals]
            )
        end

        # As ETS: the table is fixed while a query traverses it.
        :qlc.table(
          tf,
          [
            pre_fun: fn _ -> Table.safe_fixtable(tab, true) end,
            post_fun: fn -> Table.safe_fixtable(tab, false) end,
            info_fun: info_fun,
            format_fun: format_fun,
            key_equality: key_equality,
            lookup_fun: lookup_fun
          ] ++ qlc_options
        )
    end
  end

  defp table_info(tab, :num_of_objects), do: Table.info(tab, :size)
  defp table_info(tab, :keypos), do: Table.info(tab, :keypos)
  defp table_info(tab, :is_unique_objects), do: Table.info(tab, :type) != :duplicate_bag
  defp table_info(tab, :is_sorted_key), do: Table.info(tab, :type) == :ordered_set
  defp table_info(_tab, _tag), do: :undefined

  defp qlc_next(_tab, :"$end_of_table"), do: []

  defp qlc_next(tab, key),
    do: Table.lookup(tab, key) ++ fn -> qlc_next(tab, Table.next(tab, key)) end

  defp qlc_prev(_tab, :"$end_of_table"), do: []

  defp qlc_prev(tab, key),
    do: Table.lookup(tab, key) ++ fn -> qlc_prev(tab, Table.prev(tab, key)) end

  defp qlc_select(:"$end_of_table"), do: []
  defp qlc_select({objects, cont}), do: objects ++ fn -> qlc_select(Table.select(cont)) end

  defp options(options, keys) when is_list(options), do: options(options, keys, [])
  defp options(option, keys), do: options([option], keys, [])

  defp options(options, [key | keys], l) when is_list(options) do
    v =
      case :lists.keyfind(key, 1, options) do
        {:n_objects, :default} -> {:ok, default_option(key)}
        {:n_objects, n} when is_integer(n) and n >= 1 -> {:ok, n}
        {:traverse, :select} -> {:ok, :select}
        {:traverse, {:select, _ms} = select} -> {:ok, select}
        {:traverse, :first_next} -> {:ok, :first_next}
        {:traverse, :last_prev} -> {:ok, :last_prev}
        {^key, _} -> :badarg
        false -> {:ok, default_option(key)}
      end

    case v do
      :badarg -> {:badarg, key}
      {:ok, value} -> options(:lists.keydelete(key, 1, options), keys, [value | l])
    end
  end

  defp options(options, [], l), do: [:lists.reverse(l), options]

  defp default_option(:traverse), do: :select
  defp default_option(:n_objects), do: 100

  defp listify(l) when is_list(l), do: l
  defp listify(t), do: [t]

  # ------------------------------------------------------------------
  # repair_continuation

  def repair_continuation(:"$end_of_table", _ms), do: :"$end_of_table"

  def repair_continuation({@cont_tag, tab, ms_ref, limit, buffer, source} = untouched, ms)
      when is_integer(limit) and is_list(buffer) do
    if :ets.is_compiled_ms(ms_ref),
      do: untouched,
      else: {@cont_tag, tab, :ets.match_spec_compile(ms), limit, buffer, source}
  end

  # ------------------------------------------------------------------
  # i/0

  def i do
    hform(:id, :name, :type, :size, :mem, :owner)

    :io.format(~c" ~s\n", [:lists.duplicate(76, ?-)])

    Enum.each(Enum.sort(Table.all()), &prinfo/1)
    :ok
  end

  defp prinfo(tab) do
    prinfo2(tab)
  catch
    _, _ -> :io.format(~c"~-10s ... unreadable \n", [to_string_p(tab)])
  end

  defp prinfo2(tab) do
    # A table deleted since all/0 listed it: every item is :undefined
    # (ETS's prinfo2/1 prints such a row too).
    name = Table.info(tab, :name)
    type = Table.info(tab, :type)
    size = Table.info(tab, :size)
    mem = Table.info(tab, :memory)
    owner = Table.info(tab, :owner)
    hform(tab, name, type, size, mem, reg_name(owner))
  end

  defp reg_name(owner) do
    case :erlang.process_info(owner, :registered_name) do
      {:registered_name, name} -> name
      _ -> owner
    end
  end

  defp hform(a0, b0, c0, d0, e0, f0) do
    [a, b, c, d, e, f] = Enum.map([a0, b0, c0, d0, e0, f0], &to_string_p/1)

    :io.format(~c" ~s ~s ~s ~s ~s ~s\n", [
      pad_right(a, 15),
      pad_right(b, 17),
      pad_right(c, 5),
      pad_right(d, 6),
      pad_right(e, 8),
      f
    ])
  end

  defp pad_right(string, len) do
    if length(string) >= len,
      do: string,
      else: string ++ :lists.duplicate(len - length(string), ?\s)
  end

  defp to_string_p(x), do: :lists.flatten(:io_lib.format(~c"~p", [x]))

  # ------------------------------------------------------------------
  # i/1,2,3: ETS's interactive table browser, step for step (ets.erl's
  # i/3 is written with first/next/lookup/delete: the same here on
  # NativeStore.Table). Pages of `height` objects, lines cut at `width`;
  # commands read with :io.get_line/1.

  def i(tab, height, width) do
    display_items(height, width, tab, Table.first(tab), 1, 1)
  end

  @eot_prompt ~c"EOT  (q)uit (p)Digits (k)ill /Regexp -->"
  @page_prompt ~c"(c)ontinue (q)uit (p)Digits (k)ill /Regexp -->"

  defp display_items(h, w, tab, :"$end_of_table", turn, opos),
    do: choice(h, w, @eot_prompt, :eot, tab, :"$end_of_table", turn, opos)

  defp display_items(h, w, tab, key, turn, opos) when turn < h,
    do: do_display(h, w, tab, key, turn, opos)

  defp display_items(h, w, tab, key, turn, opos),
    do: choice(h, w, @page_prompt, :normal, tab, key, turn, opos)

  defp choice(h, w, prompt, mode, tab, key, turn, opos) do
    case get_line(prompt, ~c"c\n") do
      ~c"c\n" when mode == :normal ->
        do_display(h, w, tab, key, 1, opos)

      ~c"c\n" when is_tuple(mode) and tuple_size(mode) == 2 and elem(mode, 0) == :re ->
        re_search(h, w, tab, key, elem(mode, 1), 1, opos)

      ~c"q\n" ->
        :ok

      ~c"k\n" ->
        Table.delete(tab)
        :ok

      [?p | digits] ->
        print_choice(tab, mode, digits)
        choice(h, w, prompt, mode, tab, key, turn, opos)

      [?/ | regexp] ->
        case :re.compile(nonl(regexp), [:unicode]) do
          {:ok, re} ->
            re_search(h, w, tab, Table.first(tab), re, 1, 1)

          {:error, {error, _pos}} ->
            :io.format(~c"~ts\n", [error])
            choice(h, w, prompt, mode, tab, key, turn, opos)
        end

      :eof ->
        :ok

      _ ->
        choice(h, w, prompt, mode, tab, key, turn, opos)
    end
  end

  # `p<digits>`: the object at that position (ETS catches any failure).
  defp print_choice(tab, mode, digits) do
    case Integer.parse(to_string(nonl(digits))) do
      {number, ""} when mode in [:normal, :eot] ->
        print_number(tab, Table.first(tab), number)

      {number, ""} ->
        {:re, re} = mode
        print_re_num(tab, Table.first(tab), number, re)

      _ ->
        :io.put_chars(~c"Bad digits\n")
    end
  catch
    _, _ -> :ok
  end

  defp get_line(prompt, default) do
    case line_string(:io.get_line(prompt)) do
      ~c"\n" -> default
      line -> line
    end
  end

  defp line_string(binary) when is_binary(binary), do: :unicode.characters_to_list(binary)
  defp line_string(other), do: other

  defp nonl(s), do: :string.trim(s, :trailing, ~c"$\n")

  defp print_number(tab, key, num) do
    objects = Table.lookup(tab, key)

    if num - length(objects) < 1,
      do: :io.format(~c"~p~n", [:lists.nth(num, objects)]),
      else: print_number(tab, Table.next(tab, key), num - length(objects))
  end

  defp do_display(h, w, tab, key, turn, opos) do
    objects = Table.lookup(tab, key)
    do_display_items(h, w, objects, opos)
    len = length(objects)
    display_items(h, w, tab, Table.next(tab, key), turn + len, opos + len)
  end

  defp do_display_items(h, w, [obj | tail], opos) do
    do_display_item(h, w, obj, opos)
    do_display_items(h, w, tail, opos + 1)
  end

  defp do_display_items(_h, _w, [], opos), do: opos

  defp do_display_item(_h, w, item, opos) do
    l = to_string_p(item)

    l2 =
      if length(l) > w - 8,
        do: :string.slice(l, 0, w - 13) ++ ~c"  ...",
        else: l

    :io.format(~c"<~-4w> ~s~n", [opos, l2])
  end

  defp re_search(h, w, tab, :"$end_of_table", re, turn, opos),
    do: choice(h, w, @eot_prompt, {:re, re}, tab, :"$end_of_table", turn, opos)

  defp re_search(h, w, tab, key, re, turn, opos) when turn < h,
    do: re_display(h, w, tab, key, Table.lookup(tab, key), re, turn, opos)

  defp re_search(h, w, tab, key, re, turn, opos),
    do: choice(h, w, @page_prompt, {:re, re}, tab, key, turn, opos)

  defp re_display(h, w, tab, key, [], re, turn, opos),
    do: re_search(h, w, tab, Table.next(tab, key), re, turn, opos)

  defp re_display(h, w, tab, key, [obj | tail], re, turn, opos) do
    case :re.run(to_string_p(obj), re, [{:capture, :none}]) do
      :match ->
        do_display_item(h, w, obj, opos)
        re_display(h, w, tab, key, tail, re, turn + 1, opos + 1)

      :nomatch ->
        re_display(h, w, tab, key, tail, re, turn, opos)
    end
  end

  defp print_re_num(_tab, :"$end_of_table", _num, _re), do: :ok

  defp print_re_num(tab, key, num, re) do
    objects = re_match(Table.lookup(tab, key), re)

    if num - length(objects) < 1,
      do: :io.format(~c"~p~n", [:lists.nth(num, objects)]),
      else: print_re_num(tab, Table.next(tab, key), num - length(objects), re)
  end

  defp re_match(objects, re),
    do: Enum.filter(objects, &(:re.run(to_string_p(&1), re, [{:capture, :none}]) == :match))
end
