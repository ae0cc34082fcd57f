defmodule NativeStore.Table.File do
  @moduledoc false
  # ETS's file functions (tab2file/2,3, file2tab/1,2, tabfile_info/1,
  # to_dets/2, from_dets/2) for NativeStore tables. This mirrors OTP 25's
  # ets.erl clause by clause, with `NativeStore.Table` in place of `ets`, so
  # the files (disk_log halt logs whose first term is the header tuple built
  # from `info/1`) are those of `:ets` and can be exchanged both ways.

  alias NativeStore.Table

  # Objects per select/3 chunk written by tab2file (ETS writes 100 per
  # chunk; each object is its own disk_log record either way, so the file
  # bytes do not depend on it).
  @write_chunk 1000
  # Terms per disk_log chunk read by file2tab, as in ETS.
  @read_chunk 100
  # Objects per select/3 chunk handed to dets by to_dets, as in dets:from_ets.
  @dets_chunk 100

  @all [{:_, [], [:"$_"]}]

  defmodule Opts do
    @moduledoc false
    defstruct object_count: false, md5sum: false, sync: false
  end

  # ---- tab2file

  @spec tab2file(Table.table(), :file.name(), list()) :: :ok | {:error, term()}
  def tab2file(table, file, options) do
    ft = parse_ft_options(options)
    _ = :file.delete(file)

    case :file.read_file_info(file) do
      {:error, :enoent} -> :ok
      _ -> throw(:eaccess)
    end

    name = make_ref()

    case :disk_log.open(name: name, file: file) do
      {:ok, ^name} -> :ok
      {:error, reason} -> throw(reason)
    end

    try do
      write_table(table, name, ft)
    catch
      kind, reason ->
        _ = :disk_log.close(name)
        _ = :file.delete(file)
        :erlang.raise(kind, reason, __STACKTRACE__)
    end
  catch
    :throw, reason -> {:error, reason}
    :exit, reason -> {:error, reason}
  end

  defp write_table(table, name, ft) do
    info0 =
      case Table.info(table) do
        :undefined -> throw(:badtab)
        info -> info
      end

    header = [
      List.to_tuple(
        info0 ++
          [major_version: 1, minor_version: 0, extended_info: ft_options_to_list(ft)]
      )
    ]

    {log_fun, init_state} =
      if ft.md5sum do
        {fn old_state, terms ->
           {new_state, bins} = md5terms(old_state, terms)
           ok_or_throw(:disk_log.blog_terms(name, bins))
           new_state
         end, :erlang.md5_init()}
      else
        {fn _, terms ->
           ok_or_throw(:disk_log.log_terms(name, terms))
           true
         end, true}
      end

    state = log_fun.(init_state, header)
    # Fixed while it is dumped, as ETS does (deletes meanwhile do not
    # reorder the table under the walk).
    Table.safe_fixtable(table, true)

    {state, num} =
      try do
        dump_file(Table.select(table, @all, @write_chunk), log_fun, state, 0)
      after
        unfix(table)
      end

    end_info =
      if(ft.object_count, do: [count: num], else: []) ++
        if ft.md5sum, do: [md5: :erlang.md5_final(state)], else: []

    if end_info != [], do: log_fun.(state, [[:"$end_of_table", end_info]])
    if ft.sync, do: ok_or_throw(:disk_log.sync(name))
    :disk_log.close(name)
  end

  defp ok_or_throw(:ok), do: :ok
  defp ok_or_throw({:error, reason}), do: throw(reason)

  defp dump_file(:"$end_of_table", _log_fun, state, num), do: {state, num}

  defp dump_file({terms, cont}, log_fun, state, num) do
    state = log_fun.(state, terms)
    dump_file(Table.select(cont), log_fun, state, num + length(terms))
  end

  defp ft_options_to_list(ft) do
    if(ft.object_count, do: [:object_count], else: []) ++
      if ft.md5sum, do: [:md5sum], else: []
  end

  defp md5terms(state, terms) do
    Enum.map_reduce(terms, state, fn term, st ->
      bin = :erlang.term_to_binary(term)
      {bin, :erlang.md5_update(st, bin)}
    end)
    |> then(fn {bins, st} -> {st, bins} end)
  end

  # As in ETS, a non-list raises FunctionClauseError.
  defp parse_ft_options(options) when is_list(options),
    do: parse_ft_options(options, %Opts{}, false)

  defp parse_ft_options([], ft, _), do: ft

  defp parse_ft_options([{:sync, true} | rest], ft, ei),
    do: parse_ft_options(rest, %Opts{ft | sync: true}, ei)

  defp parse_ft_options([{:sync, false} | rest], ft, ei), do: parse_ft_options(rest, ft, ei)

  defp parse_ft_options([{:extended_info, l} | rest], ft, false),
    do: parse_ft_options(rest, parse_ft_info_options(ft, l), true)

  defp parse_ft_options([other | _], _, _), do: throw({:unknown_option, other})
  defp parse_ft_options(malformed, _, _), do: throw({:malformed_option, malformed})

  defp parse_ft_info_options(ft, []), do: ft

  defp parse_ft_info_options(ft, [:object_count | t]),
    do: parse_ft_info_options(%Opts{ft | object_count: true}, t)

  defp parse_ft_info_options(ft, [:md5sum | t]),
    do: parse_ft_info_options(%Opts{ft | md5sum: true}, t)

  defp parse_ft_info_options(_, [unexpected | _]),
    do: throw({:unknown_option, [{:extended_info, [unexpected]}]})

  defp parse_ft_info_options(_, malformed), do: throw({:malformed_option, malformed})

  # ---- file2tab

  @spec file2tab(:file.name(), list()) :: {:ok, Table.table()} | {:error, term()}
  def file2tab(file, opts) do
    {verify, table_arg} = parse_f2t_opts(opts, false, [])
    name = open_log(file, verify)
    {major, minor, ft, md5_state, header, dl_cont} = header_data(name, verify)

    try do
      if major > 1, do: throw({:unsupported_file_version, {major, minor}})
      {table, head_count} = create_tab(header, table_arg)
      stripped = if verify, do: ft, else: %Opts{}

      {read_fun, init_state} =
        if stripped.md5sum do
          {fn {old_md5, old_count, _ol, old_cont} = os ->
             case wrap_bchunk(name, old_cont, @read_chunk, verify) do
               :eof ->
                 {os, []}

               {new_cont, bins} ->
                 {terms, new_md5, new_count, new_last} = md5_and_convert(bins, old_md5, old_count)
                 {{new_md5, new_count, new_last, new_cont}, terms}
             end
           end, {md5_state, 0, [], dl_cont}}
        else
          {fn {_, old_count, _ol, old_cont} = os ->
             case wrap_chunk(name, old_cont, @read_chunk, verify) do
               :eof ->
                 {os, []}

               {new_cont, list} ->
                 {new_last, new_count, new_list} = scan_for_endinfo(list, old_count)
                 {{false, new_count, new_last, new_cont}, new_list}
             end
           end, {false, 0, [], dl_cont}}
        end

      try do
        do_read_and_verify(read_fun, init_state, table, stripped, head_count, verify)
      catch
        kind, reason ->
          Table.delete(table)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end
    after
      _ = :disk_log.close(name)
    end
  catch
    :throw, reason -> {:error, reason}
    :exit, reason -> {:error, reason}
  end

  defp do_read_and_verify(read_fun, init_state, table, ft, head_count, verify) do
    case load_table(read_fun, init_state, table) do
      {_, final_count, [], _} ->
        if ft.md5sum or ft.object_count, do: throw(:badfile)
        if verify and final_count != head_count, do: throw(:invalid_object_count)
        {:ok, table}

      {final_md5, final_count, [:"$end_of_table", last_info], _} ->
        e_count =
          case :lists.keyfind(:count, 1, last_info) do
            {:count, n} -> n
            _ -> false
          end

        e_md5 =
          case :lists.keyfind(:md5, 1, last_info) do
            {:md5, m} -> m
            _ -> false
          end

        if ft.md5sum and :erlang.md5_final(final_md5) !== e_md5, do: throw(:checksum_error)

        cond do
          ft.object_count ->
            if final_count !== e_count, do: throw(:invalid_object_count)

          verify and not ft.md5sum ->
            if final_count !== head_count, do: throw(:invalid_object_count)

          true ->
            :ok
        end

        {:ok, table}
    end
  end

  defp parse_f2t_opts([], verify, table), do: {verify, table}
  defp parse_f2t_opts([{:verify, true} | t], _ov, table), do: parse_f2t_opts(t, true, table)
  defp parse_f2t_opts([{:verify, false} | t], ov, table), do: parse_f2t_opts(t, ov, table)
  defp parse_f2t_opts([{:table, table} | t], ov, []), do: parse_f2t_opts(t, ov, table)
  defp parse_f2t_opts([unexpected | _], _, _), do: throw({:unknown_option, unexpected})
  defp parse_f2t_opts(malformed, _, _), do: throw({:malformed_option, malformed})

  @mandatory [:name, :type, :protection, :named_table, :keypos, :size]

  defp verify_header_mandatory(l),
    do: Enum.count(l, &match?({tag, _} when tag in @mandatory, &1)) == 6

  defp wrap_bchunk(name, c, n, verify) do
    case :disk_log.bchunk(name, c, n) do
      {_, _, x} when x > 0 and verify -> throw(:badfile)
      {nc, bin, _} -> {nc, bin}
      y -> y
    end
  end

  defp wrap_chunk(name, c, n, verify) do
    case :disk_log.chunk(name, c, n) do
      {_, _, x} when x > 0 and verify -> throw(:badfile)
      {nc, tl, _} -> {nc, tl}
      y -> y
    end
  end

  # As in ETS, the verifying reader looks for `major`/`minor` (not
  # `major_version`/`minor_version`), so its version is {0, 0}.
  defp get_header_data(name, true) do
    case wrap_bchunk(name, :start, 1, true) do
      {c, [bin]} when is_binary(bin) ->
        case :erlang.binary_to_term(bin) do
          tup when is_tuple(tup) ->
            l = Tuple.to_list(tup)
            if not verify_header_mandatory(l), do: throw(:badfile)
            ft = ft_options_from_header(l)
            md5 = if ft.md5sum, do: :erlang.md5_update(:erlang.md5_init(), bin), else: false
            {header_int(l, :major), header_int(l, :minor), ft, md5, l, c}

          _ ->
            throw(:badfile)
        end

      _ ->
        throw(:badfile)
    end
  end

  defp get_header_data(name, false) do
    case wrap_chunk(name, :start, 1, false) do
      {c, [tup]} when is_tuple(tup) ->
        l = Tuple.to_list(tup)
        if not verify_header_mandatory(l), do: throw(:badfile)

        {header_int(l, :major_version), header_int(l, :minor_version), ft_options_from_header(l),
         false, l, c}

      _ ->
        throw(:badfile)
    end
  end

  defp header_int(l, tag) do
    case :lists.keyfind(tag, 1, l) do
      {^tag, v} -> v
      _ -> 0
    end
  end

  defp ft_options_from_header(l) do
    case :lists.keyfind(:extended_info, 1, l) do
      {:extended_info, i} when is_list(i) ->
        %Opts{object_count: :lists.member(:object_count, i), md5sum: :lists.member(:md5sum, i)}

      _ ->
        %Opts{}
    end
  end

  defp md5_and_convert([], md5, count), do: {[], md5, count, []}

  defp md5_and_convert([h | t], md5, count) when is_binary(h) do
    case safe_binary_to_term(h) do
      :error ->
        md5_and_convert(t, md5, count)

      {:ok, [:"$end_of_table", _dat] = l} ->
        {[], md5, count, l}

      {:ok, term} ->
        {rest, new_md5, new_count, new_last} =
          md5_and_convert(t, :erlang.md5_update(md5, h), count + 1)

        {[term | rest], new_md5, new_count, new_last}
    end
  end

  # ETS's `catch binary_to_term(H)`: an undecodable record is skipped.
  defp safe_binary_to_term(bin) do
    {:ok, :erlang.binary_to_term(bin)}
  catch
    _, _ -> :error
  end

  defp scan_for_endinfo([], count), do: {[], count, []}

  defp scan_for_endinfo([[:"$end_of_table", dat]], count),
    do: {[:"$end_of_table", dat], count, []}

  defp scan_for_endinfo([term | t], count) do
    {new_last, n_count, rest} = scan_for_endinfo(t, count + 1)
    {new_last, n_count, [term | rest]}
  end

  defp load_table(read_fun, state, table) do
    case read_fun.(state) do
      {new_state, []} ->
        new_state

      {new_state, list} ->
        Table.insert(table, list)
        load_table(read_fun, new_state, table)
    end
  end

  defp create_tab(i, table_arg) do
    {:name, name} = :lists.keyfind(:name, 1, i)
    {:type, type} = :lists.keyfind(:type, 1, i)
    {:protection, p} = :lists.keyfind(:protection, 1, i)
    {:keypos, _kp} = keypos = :lists.keyfind(:keypos, 1, i)
    {:size, sz} = :lists.keyfind(:size, 1, i)
    l1 = [type, p, keypos]

    l2 =
      case :lists.keyfind(:named_table, 1, i) do
        {:named_table, true} -> [:named_table | l1]
        {:named_table, false} -> l1
      end

    l3 =
      case :lists.keyfind(:compressed, 1, i) do
        {:compressed, true} -> [:compressed | l2]
        {:compressed, false} -> l2
        false -> l2
      end

    l4 =
      case :lists.keyfind(:write_concurrency, 1, i) do
        {:write_concurrency, _} = wcc -> [wcc | l3]
        _ -> l3
      end

    l5 =
      case :lists.keyfind(:read_concurrency, 1, i) do
        {:read_concurrency, _} = rcc -> [rcc | l4]
        false -> l4
      end

    case table_arg do
      [] ->
        try do
          {Table.new(name, l5), sz}
        catch
          _, _ -> throw(:cannot_create_table)
        end

      _ ->
        {table_arg, sz}
    end
  end

  # Opens `file` as a read-only disk log under a fresh name, as ETS does;
  # with `strict`, a log that needed repair is a bad file.
  defp open_log(file, strict) do
    name = make_ref()

    case :disk_log.open(name: name, file: file, mode: :read_only) do
      {:ok, ^name} ->
        name

      {:repaired, ^name, _, _} when strict ->
        _ = :disk_log.close(name)
        throw(:badfile)

      {:repaired, ^name, _, _} ->
        name

      {:error, other} ->
        throw({:read_error, other})

      other ->
        throw(other)
    end
  end

  # The header of the open log `name`. ETS leaves the log open when reading
  # the header raises; it is closed here.
  defp header_data(name, verify) do
    get_header_data(name, verify)
  catch
    kind, reason ->
      _ = :disk_log.close(name)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  # ---- tabfile_info

  @spec tabfile_info(:file.name()) :: {:ok, keyword()} | {:error, term()}
  def tabfile_info(file) when is_list(file) or is_atom(file) do
    name = open_log(file, false)
    {major, minor, _ft, _md5, header, _cont} = header_data(name, false)

    ok_or_throw(:disk_log.close(name))

    [n, type, p, val, kp, sz] =
      for tag <- @mandatory, do: {^tag, _} = :lists.keyfind(tag, 1, header)

    ei =
      case :lists.keyfind(:extended_info, 1, header) do
        false -> {:extended_info, []}
        ei0 -> ei0
      end

    {:ok, [n, type, p, val, kp, sz, ei, {:version, {major, minor}}]}
  catch
    :throw, reason -> {:error, reason}
    :exit, reason -> {:error, reason}
  end

  # ---- dets

  @spec to_dets(Table.table(), :dets.tab_name()) :: :dets.tab_name()
  def to_dets(table, dets_table) do
    case erl_catch(fn -> dets_from_table(dets_table, table) end) do
      {:error, reason} -> :erlang.error(reason, [table, dets_table])
      {:EXIT, {reason, _stack}} -> :erlang.error(reason, [table, dets_table])
      {:EXIT, reason} -> :erlang.error(reason, [table, dets_table])
      :ok -> dets_table
      unexpected -> :erlang.error(unexpected, [table, dets_table])
    end
  end

  @spec from_dets(Table.table(), :dets.tab_name()) :: true
  def from_dets(table, dets_table) do
    case erl_catch(fn -> dets_to_table(dets_table, table) end) do
      {:error, reason} -> :erlang.error(reason, [table, dets_table])
      {:EXIT, {reason, _stack}} -> :erlang.error(reason, [table, dets_table])
      {:EXIT, reason} -> :erlang.error(reason, [table, dets_table])
      ^table -> true
      unexpected -> :erlang.error(unexpected, [table, dets_table])
    end
  end

  # Erlang's `catch Expr`.
  defp erl_catch(fun) do
    fun.()
  catch
    :throw, value -> value
    :error, reason -> {:EXIT, {reason, __STACKTRACE__}}
    :exit, reason -> {:EXIT, reason}
  end

  # dets:from_ets/2 (dets:init_table/2 sends the same request with the same
  # defaults: term format, default slots).
  defp dets_from_table(dets_table, table) do
    # dets:from_ets/2 fixes the table while it reads it.
    Table.safe_fixtable(table, true)

    try do
      chunk = Table.select(table, @all, @dets_chunk)
      :dets.init_table(dets_table, from_table_fun(chunk))
    after
      unfix(table)
    end
  end

  # `catch ets:safe_fixtable(Tab, false)`: the table may be gone.
  defp unfix(table) do
    Table.safe_fixtable(table, false)
  rescue
    ArgumentError -> false
  end

  defp from_table_fun(chunk) do
    fn
      :close -> :ok
      :read when chunk == :"$end_of_table" -> :end_of_input
      :read -> {elem(chunk, 0), from_table_fun(Table.select(elem(chunk, 1)))}
    end
  end

  # dets:to_ets/2.
  defp dets_to_table(dets_table, table) do
    case Table.info(table, :protection) do
      :undefined ->
        :erlang.error(:badarg, [dets_table, table])

      _ ->
        :dets.foldl(
          fn x, t ->
            true = Table.insert(t, x)
            t
          end,
          table,
          dets_table
        )
    end
  end
end
