defmodule Mix.Tasks.Compile.NativeStoreNif do
  @moduledoc """
  Builds the Rust NIF (`native/nif`) with `cargo build --release` and copies
  the library to `priv/native_store_nif.so`. hex.pm is out of reach, so this
  project carries its own compiler step instead of depending on rustler's.
  """
  use Mix.Task.Compiler

  @crate "native_store_nif"

  @impl true
  def run(_args) do
    root = File.cwd!()
    manifest = Path.join([root, "native", "nif", "Cargo.toml"])

    {out, status} =
      System.cmd("cargo", ["build", "--release", "--quiet", "--manifest-path", manifest],
        stderr_to_stdout: true
      )

    if status != 0 do
      Mix.shell().error(out)
      Mix.raise("cargo build failed for #{@crate}")
    end

    IO.write(out)
    src = Path.join([root, "target", "release", "lib#{@crate}.so"])
    priv = Path.join(Mix.Project.app_path(), "priv")
    File.mkdir_p!(priv)
    dst = Path.join(priv, "#{@crate}.so")
    # Remove first: overwriting a loaded .so in place can crash a running VM.
    File.rm(dst)
    File.cp!(src, dst)
    {:ok, []}
  end
end

defmodule NativeStore.MixProject do
  use Mix.Project

  def project do
    [
      app: :native_store,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:native_store_nif] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "readme"]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {NativeStore.Application, []}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
