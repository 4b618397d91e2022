//! JavaScript and TypeScript for `execute_code`: Node.js and a TypeScript runner found on the host,
//! and the command that runs a snippet with them.
//!
//! A snippet is written to a hidden file in the workspace (`.sandlock-code-<call>.js` or `.mts`)
//! and run from there, so that `require('./helper')` and `import './helper.js'` find the
//! workspace's files as they would for a script saved there, and a stack trace names the lines of
//! the snippet. The file is deleted when the run ends.
//!
//! - **JavaScript** runs as `node <file>.js`, with Node's own choice of module system: CommonJS,
//!   unless the code uses `import`, `export` or top-level `await`.
//! - **TypeScript** runs as an ES module (`.mts`), so that top-level `await` and `import` work;
//!   `require`, `__filename` and `__dirname` are provided too, since snippets often use them. The
//!   runner is [tsx](https://tsx.is) when one is found (`--tsx`, or `tsx` in `PATH`), loaded into
//!   Node as an import hook (its command-line wrapper starts a second Node for nothing), else Node's
//!   own type stripping where Node is 22.6 or newer (with its transform, for enums and
//!   namespaces, from 22.7).
//!
//! Node starts in the sandbox with the `system` preset (it reads `/usr` and its libraries); what
//! it cannot see there it does without: `os.cpus()` is empty (no `/proc/cpuinfo`; use
//! `os.availableParallelism()`), and `process.memoryUsage()` fails (no `/proc/self/stat`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sandlock_core::{Command, Stdio};

use crate::python::which;

/// Defines what TypeScript snippets expect from CommonJS in an ES module, before the snippet runs.
/// A `data:` URL: no `?`, `#` or `%`, which would end or change it.
const ESM_PRELUDE: &str = "data:text/javascript,import{createRequire}from\"node:module\";\
import{dirname}from\"node:path\";const f=process.argv[1],g=globalThis;\
g.require||=createRequire(f);g.__filename||=f;g.__dirname||=dirname(f);";

/// A language `execute_code` runs on Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// JavaScript.
    JavaScript,
    /// TypeScript.
    TypeScript,
}

/// How TypeScript is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeScript {
    /// tsx's loader (`<package>/dist/loader.mjs`), registered with `node --import`.
    Tsx {
        /// The loader module.
        loader: PathBuf,
        /// tsx's version.
        version: String,
    },
    /// Node's own type stripping (Node 22.6 and newer).
    StripTypes,
    /// Nothing found.
    Missing,
}

/// Node.js and what it needs to read.
#[derive(Debug, Clone)]
pub struct Node {
    /// The executable (absolute).
    pub path: PathBuf,
    /// Its version (major, minor, patch).
    pub version: (u32, u32, u32),
    /// Directories that become readable in the sandbox: Node's installation prefix, and the
    /// `node_modules` directory that holds tsx and its esbuild.
    pub readable: Vec<PathBuf>,
    /// The TypeScript runner.
    pub typescript: TypeScript,
}

/// `v20.20.2` as (20, 20, 2).
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim().trim_start_matches('v').split('.');
    let mut n = || it.next()?.parse::<u32>().ok();
    Some((n()?, n()?, n()?))
}

/// Adds `dir` to `readable` unless it would expose the workspace root (or is already covered).
fn grant(readable: &mut Vec<PathBuf>, dir: PathBuf, workspace_root: &Path) {
    if dir == Path::new("/") || workspace_root.starts_with(&dir) {
        tracing::warn!(path = %dir.display(), "not granting this Node path: it contains the workspace root");
        return;
    }
    if !readable.iter().any(|q| dir.starts_with(q)) {
        readable.retain(|q| !q.starts_with(&dir));
        readable.push(dir);
    }
}

/// The tsx package directory behind `given`: a package directory, or any file in it (its
/// `bin/tsx` is a link to `dist/cli.mjs`).
fn tsx_package(given: &Path) -> Option<PathBuf> {
    let real = given.canonicalize().ok()?;
    real.ancestors().find_map(|d| {
        let manifest = std::fs::read_to_string(d.join("package.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&manifest).ok()?;
        (v.get("name")?.as_str()? == "tsx").then(|| d.to_path_buf())
    })
}

impl Node {
    /// Finds Node (`node`: a path or a name in `PATH`; `None` looks for `node` and is content
    /// without it) and a TypeScript runner (`tsx`: tsx's `bin/tsx` or package directory; `None`
    /// looks for `tsx` in `PATH`). Runs `node --version` once, unsandboxed, at start-up.
    pub fn discover(
        node: Option<&Path>,
        tsx: Option<&Path>,
        workspace_root: &Path,
    ) -> anyhow::Result<Option<Node>> {
        let asked = node.is_some();
        let node = node.unwrap_or(Path::new("node"));
        let Some(path) = which(node).filter(|p| p.is_file()) else {
            if asked {
                bail!(
                    "Node.js {:?} was not found; install it (e.g. apt-get install nodejs) or fix \
                     [node] interpreter / --node",
                    node.display().to_string()
                );
            }
            tracing::info!("no node in PATH: execute_code runs python only");
            return Ok(None);
        };
        let out = std::process::Command::new(&path)
            .arg("--version")
            .env_clear()
            .current_dir("/")
            .output()
            .with_context(|| format!("cannot run Node.js {:?}", path.display().to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(version) = parse_version(&text).filter(|_| out.status.success()) else {
            bail!(
                "{:?} --version printed {:?}, not a Node.js version; set [node] interpreter or \
                 --node to Node.js",
                path.display().to_string(),
                text.trim()
            );
        };
        let mut readable = Vec::new();
        if let Some(prefix) = path
            .canonicalize()
            .ok()
            .and_then(|r| Some(r.parent()?.parent()?.to_path_buf()))
        {
            grant(&mut readable, prefix, workspace_root);
        }
        let found = match tsx {
            Some(t) => Some(tsx_package(t).with_context(|| {
                format!(
                    "--tsx {:?} is not tsx (no package.json named tsx at or above it); give its \
                     bin/tsx or its package directory",
                    t.display().to_string()
                )
            })?),
            None => which(Path::new("tsx")).and_then(|t| tsx_package(&t)),
        };
        let typescript = match found {
            Some(pkg) if pkg.join("dist/loader.mjs").is_file() => {
                let version = std::fs::read_to_string(pkg.join("package.json"))
                    .ok()
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                    .and_then(|v| Some(v.get("version")?.as_str()?.to_string()))
                    .unwrap_or_default();
                // tsx runs esbuild, a sibling package: grant the outermost node_modules.
                let modules = pkg
                    .ancestors()
                    .filter(|d| d.file_name().is_some_and(|n| n == "node_modules"))
                    .last()
                    .map_or_else(|| pkg.clone(), Path::to_path_buf);
                grant(&mut readable, modules, workspace_root);
                TypeScript::Tsx {
                    loader: pkg.join("dist/loader.mjs"),
                    version,
                }
            }
            Some(pkg) if tsx.is_some() => bail!(
                "tsx at {} has no dist/loader.mjs (tsx 4 or newer is needed)",
                pkg.display()
            ),
            _ if version >= (22, 6, 0) => TypeScript::StripTypes,
            _ => TypeScript::Missing,
        };
        Ok(Some(Node {
            path,
            version,
            readable,
            typescript,
        }))
    }

    /// Words for the log and for errors: the version, and how TypeScript runs.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.version;
        let ts = match &self.typescript {
            TypeScript::Tsx { version, .. } => format!("tsx {version}"),
            TypeScript::StripTypes => "node's type stripping".into(),
            TypeScript::Missing => "none".into(),
        };
        format!("node {a}.{b}.{c}, typescript: {ts}")
    }

    /// The command that runs the snippet saved at `file` (relative to the workspace, which is the
    /// working directory), and that file's extension. An error in words when the language cannot
    /// run here.
    pub fn command(&self, script: Script, file: &str) -> Result<Command, String> {
        let mut argv: Vec<String> = vec![self.path.display().to_string()];
        if script == Script::TypeScript {
            match &self.typescript {
                TypeScript::Tsx { loader, .. } => {
                    argv.extend(["--import".into(), ESM_PRELUDE.into()]);
                    argv.extend(["--import".into(), file_url(loader)]);
                }
                TypeScript::StripTypes => {
                    // Transforming (22.7 and newer) also handles enums and namespaces, which
                    // stripping alone refuses.
                    argv.push(if self.version >= (22, 7, 0) {
                        "--experimental-transform-types".into()
                    } else {
                        "--experimental-strip-types".into()
                    });
                    argv.push("--disable-warning=ExperimentalWarning".into());
                    argv.extend(["--import".into(), ESM_PRELUDE.into()]);
                }
                TypeScript::Missing => return Err(missing_typescript(self.version)),
            }
        }
        argv.push(format!("./{file}"));
        Ok(Command::new(argv)
            .env("TSX_DISABLE_CACHE", "1")
            .stdin(Stdio::Null))
    }
}

/// The extension a snippet's file gets.
pub fn extension(script: Script) -> &'static str {
    match script {
        Script::JavaScript => "js",
        Script::TypeScript => "mts",
    }
}

/// Why TypeScript cannot run, with what to install.
pub fn missing_typescript(version: (u32, u32, u32)) -> String {
    let (a, b, c) = version;
    format!(
        "no TypeScript runner on this server: Node.js here is {a}.{b}.{c}, which cannot strip \
         types (22.6 or newer can), and tsx was not found. Ask the operator to install tsx \
         (npm install -g tsx, or --tsx PATH) or a newer Node.js; meanwhile, the same code \
         without type annotations runs as language=javascript"
    )
}

/// A `file://` URL for an absolute path (what `node --import` takes).
fn file_url(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in p.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_urls_are_read_and_written_exactly() {
        assert_eq!(parse_version("v20.20.2\n"), Some((20, 20, 2)));
        assert_eq!(parse_version("22.6.0"), Some((22, 6, 0)));
        assert_eq!(parse_version("not node"), None);
        assert_eq!(
            file_url(Path::new("/opt/my dir/ä.mjs")),
            "file:///opt/my%20dir/%C3%A4.mjs"
        );
    }

    #[test]
    fn the_prelude_is_one_whole_data_url() {
        let body = ESM_PRELUDE.strip_prefix("data:text/javascript,").unwrap();
        assert!(!body.contains(['?', '#', '%']), "{body}");
    }

    #[test]
    fn typescript_without_a_runner_says_what_to_install() {
        let n = Node {
            path: "/usr/bin/node".into(),
            version: (20, 1, 0),
            readable: Vec::new(),
            typescript: TypeScript::Missing,
        };
        let e = n.command(Script::TypeScript, "x.mts").unwrap_err();
        assert!(
            e.contains("npm install -g tsx") && e.contains("20.1.0"),
            "{e}"
        );
        assert!(n.command(Script::JavaScript, "x.js").is_ok());
    }

    #[test]
    fn grants_never_cover_the_workspace_root() {
        let mut r = Vec::new();
        grant(&mut r, "/tmp".into(), Path::new("/tmp/sandlock-mcp"));
        grant(&mut r, "/".into(), Path::new("/tmp/sandlock-mcp"));
        assert!(r.is_empty());
        grant(&mut r, "/usr/lib/node_modules".into(), Path::new("/tmp/x"));
        grant(&mut r, "/usr".into(), Path::new("/tmp/x"));
        assert_eq!(r, [PathBuf::from("/usr")]);
    }
}
