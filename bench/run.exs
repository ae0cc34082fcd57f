# make bench  (MIX_ENV=prod mix run bench/run.exs)
#
# Runs every bench/*_bench.exs, in alphabetical order, and prints their
# markdown tables to stdout.
#
# Conventions for a bench file:
#   * start with `Code.require_file("bench_helper.exs", __DIR__)` and use
#     `BenchHelper` (timing over 1 and N processes, median ns/op, tables);
#   * either define a module with a public `run/0` (run.exs calls it; to let
#     the file also run alone, call it at the top level only when the file is
#     the script given to `mix run`:
#       if Enum.any?(:init.get_plain_arguments(),
#                    &(Path.basename(to_string(&1)) == "x_bench.exs")),
#         do: XBench.run()
#     ), or just do the work at the top level of the file;
#   * honour `BenchHelper.quick?/0` (`BENCH_QUICK=1`) with fewer ops/runs;
#   * budget: the whole `make bench` should stay under ~3.5 minutes (each
#     file prints its duration below its tables; keep medians of >= 5 runs).
#   * all files run in this one VM, in turn, with the :native_store
#     application already started by `mix run` (its supervisors are running:
#     do not start them again); clean up the tables/processes you create.
#
# Environment:
#   BENCH_QUICK=1         fast smoke run (fewer operations and runs)
#   BENCH_ONLY=table,reg  run only the files whose name contains one of these
Code.require_file("bench_helper.exs", __DIR__)

only =
  case System.get_env("BENCH_ONLY") do
    nil -> nil
    "" -> nil
    s -> String.split(s, ",", trim: true)
  end

files =
  __DIR__
  |> Path.join("*_bench.exs")
  |> Path.wildcard()
  |> Enum.sort()
  |> Enum.filter(fn f ->
    only == nil or Enum.any?(only, &String.contains?(Path.basename(f), &1))
  end)

{rev, _} = System.cmd("git", ["rev-parse", "--short", "HEAD"], stderr_to_stdout: true)
{dirty, _} = System.cmd("git", ["status", "--porcelain", "--untracked-files=no"])

IO.puts("""
# NativeStore benchmarks

- commit #{String.trim(rev)}#{if dirty != "", do: " (working tree has uncommitted changes)", else: ""}
- Elixir #{System.version()}, OTP #{System.otp_release()} (erts #{:erlang.system_info(:version)}), \
#{System.schedulers_online()} schedulers online, #{:erlang.system_info(:logical_processors_available)} logical CPUs available
- MIX_ENV=#{Mix.env()}, #{if BenchHelper.quick?(), do: "BENCH_QUICK=1 (smoke run: numbers only indicative)", else: "full run"}, \
median of #{BenchHelper.runs()} runs after a warm-up
- ns/op is wall time / total operations (with N processes: aggregate throughput); \
ratio = NativeStore / baseline, < 1 means NativeStore is faster
- files: #{Enum.map_join(files, ", ", &Path.basename/1)}
""")

t_all = System.monotonic_time(:millisecond)

failures =
  Enum.flat_map(files, fn file ->
    IO.puts("\n## #{Path.basename(file)}\n")
    t0 = System.monotonic_time(:millisecond)

    result =
      try do
        modules = Code.require_file(file) || []

        for {mod, _} <- modules, function_exported?(mod, :run, 0) do
          mod.run()
        end

        :ok
      rescue
        e -> {:error, Exception.format(:error, e, __STACKTRACE__)}
      catch
        kind, reason -> {:error, Exception.format(kind, reason, __STACKTRACE__)}
      end

    secs = (System.monotonic_time(:millisecond) - t0) / 1000
    IO.puts("\n_#{Path.basename(file)}: #{:erlang.float_to_binary(secs, decimals: 1)} s_")

    case result do
      :ok ->
        []

      {:error, msg} ->
        IO.puts(:stderr, "bench #{Path.basename(file)} FAILED:\n#{msg}")
        [Path.basename(file)]
    end
  end)

total = (System.monotonic_time(:millisecond) - t_all) / 1000
IO.puts("\n_total: #{:erlang.float_to_binary(total, decimals: 1)} s_")

if failures != [] do
  IO.puts(:stderr, "failed: #{Enum.join(failures, ", ")}")
  System.halt(1)
end
