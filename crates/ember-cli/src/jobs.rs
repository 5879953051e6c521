//! Large jobs: the summary as the record of a run, resuming from it, joining the summaries of
//! a sharded run (`ember merge-summaries`), and report.html made from a summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ember_core::limits::read_regular_file;
use ember_vision::{Card, ReadPaths, Written, check_outputs, relative_to, report_html, write_atomically};
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::MergeArgs;

/// Summaries are JSON text; a larger file is refused before it is read.
const MAX_SUMMARY_BYTES: u64 = 1 << 30;

/// A path as text for the summary and messages (JSON strings are UTF-8: other bytes of a file
/// name are shown as U+FFFD).
pub fn shown_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Writes a JSON document atomically, pretty-printed.
pub fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n";
    write_atomically(path, |file| std::io::Write::write_all(file, text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads a summary written by `ember explain`.
pub fn read_summary(path: &Path) -> Result<Value, String> {
    let bytes = read_regular_file(path, "summary", MAX_SUMMARY_BYTES).map_err(|e| e.to_string())?;
    let summary: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a summary written by `ember explain` ({e})", path.display()))?;
    if !summary["settings"].is_object() || !summary["images"].is_array() {
        return Err(format!(
            "{} is not a summary written by `ember explain` (no settings or images)",
            path.display()
        ));
    }
    Ok(summary)
}

/// The rows of an earlier run (the summary at `path`) that `--resume` keeps: those of the given
/// inputs (index, name, files) that did not fail and whose files are all present. The earlier
/// run must have had the same settings.
pub fn resumable(
    path: &Path,
    settings: &Value,
    inputs: &[(usize, String, Vec<PathBuf>)],
) -> Result<BTreeMap<usize, Value>, Failure> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let summary = read_summary(path).map_err(|e| Failure::usage(format!("--resume: {e}")))?;
    if &summary["settings"] != settings {
        return Err(Failure::usage(format!(
            "--resume: {} was written with other settings ({}); resume with the same arguments, or write to \
             another --out-dir",
            path.display(),
            differences(&summary["settings"], settings)
        )));
    }
    let rows: BTreeMap<u64, &Value> = summary["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row.get("error").is_none())
        .filter_map(|row| Some((row["input_index"].as_u64()?, row)))
        .collect();
    let mut kept = BTreeMap::new();
    for (index, name, files) in inputs {
        let Some(row) = rows.get(&(*index as u64)) else {
            continue;
        };
        if row["image"].as_str() == Some(name.as_str()) && files.iter().all(|f| f.is_file()) {
            kept.insert(*index, (*row).clone());
        }
    }
    Ok(kept)
}

/// The settings that differ, as `name: old → new`.
fn differences(old: &Value, new: &Value) -> String {
    let keys: std::collections::BTreeSet<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|o| o.keys())
        .collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| old.get(k.as_str()) != new.get(k.as_str()))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or_else(|| "unset".into(), Value::to_string);
            format!("{k}: {} → {}", show(old.get(k.as_str())), show(new.get(k.as_str())))
        })
        .collect();
    changed.join(", ")
}

/// Where the report of a summary goes: beside it, named after it (`summary.json` →
/// `report.html`, a slice's `summary-K-of-N.json` → `report-K-of-N.html`, `x.json` → `x.html`),
/// so that the slices of a sharded run never write the same page.
pub fn report_path(summary: &Path) -> PathBuf {
    let stem = summary
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match stem.strip_prefix("summary") {
        Some(rest) => format!("report{rest}.html"),
        None => format!("{stem}.html"),
    };
    summary.with_file_name(name)
}

/// Writes report.html beside the summary at `path`, from the summary alone.
pub fn write_report(summary_path: &Path) -> Result<PathBuf, String> {
    let summary = read_summary(summary_path)?;
    let report = report_path(summary_path);
    let folder = report.parent().map(Path::to_path_buf).unwrap_or_default();
    let folder = if folder.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        folder
    };
    let link = |value: &Value| -> Option<String> {
        let path = Path::new(value.as_str()?);
        // Pictures are written beside the report; one elsewhere is linked by its absolute path.
        relative_to(path, &folder).or_else(|| std::path::absolute(path).ok().map(|p| shown_path(&p)))
    };
    let cards: Vec<Card> = summary["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let label = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            Card {
                name: row["image"].as_str().unwrap_or_default().to_owned(),
                thumbnail: link(&row["thumbnail"]),
                overlay: row.get("error").is_none().then(|| link(&row["overlay"])).flatten(),
                class: row["class"].as_u64().map(|class| {
                    (
                        class as usize,
                        label(&row["label"]),
                        row["score"].as_f64().unwrap_or(f64::NAN) as f32,
                        row["probability"].as_f64().map(|p| p as f32),
                    )
                }),
                target: row["target"].as_str().map(str::to_owned),
                top: row["top5"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        Some((
                            t["class"].as_u64()? as usize,
                            label(&t["label"]),
                            t["probability"].as_f64()? as f32,
                        ))
                    })
                    .collect(),
                peak: (|| {
                    let peak = &row["peak"];
                    Some((
                        peak["x"].as_u64()? as usize,
                        peak["y"].as_u64()? as usize,
                        peak["value"].as_f64()? as f32,
                    ))
                })(),
                seconds: row["seconds"].as_f64(),
                error: row["error"].as_str().map(str::to_owned),
            }
        })
        .collect();
    let settings = &summary["settings"];
    let names = |key: &str| {
        settings[key]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let facts = format!(
        "{} images · {} · {} ({}) · {}",
        cards.len(),
        settings["model"].as_str().unwrap_or_default(),
        names("methods"),
        names("rectifiers"),
        summary["device"].as_str().unwrap_or_default()
    );
    let page = report_html("Ember explanations", &facts, &cards);
    write_atomically(&report, |file| std::io::Write::write_all(file, page.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", report.display()))?;
    Ok(report)
}

/// `ember merge-summaries`: the slices' rows in input order, as one unsharded summary.
pub fn merge(args: &MergeArgs) -> Result<(), Failure> {
    let mut read = ReadPaths::default();
    read.files.extend(args.summaries.iter().map(|s| ("summary", s.clone())));
    let mut written = vec![Written::new("--out", &args.out)];
    if args.report {
        written.push(Written::new("--report", report_path(&args.out)));
    }
    check_outputs(&read, &written, &[]).map_err(|e| Failure::usage(e.to_string()))?;
    let summaries = args
        .summaries
        .iter()
        .map(|path| read_summary(path).map(|s| (path, s)))
        .collect::<Result<Vec<_>, _>>()?;
    let (first_path, first) = &summaries[0];
    let count = first["shard"]["count"].as_u64();
    let mut slices = BTreeMap::new();
    let mut rows: BTreeMap<u64, Value> = BTreeMap::new();
    let mut seconds = 0.0;
    for (path, summary) in &summaries {
        if summary["settings"] != first["settings"] {
            return Err(Failure::Input(format!(
                "{} and {} come from runs with other settings ({})",
                first_path.display(),
                path.display(),
                differences(&first["settings"], &summary["settings"])
            )));
        }
        if summary["inputs"] != first["inputs"] || summary["shard"]["count"].as_u64() != count {
            return Err(Failure::Input(format!(
                "{} and {} are slices of different runs ({} inputs in {} slices, and {} in {})",
                first_path.display(),
                path.display(),
                first["inputs"],
                first["shard"]["count"],
                summary["inputs"],
                summary["shard"]["count"]
            )));
        }
        let Some(index) = summary["shard"]["index"].as_u64() else {
            return Err(Failure::Input(format!(
                "{} is the summary of a whole run, not of a slice (--shard K/N)",
                path.display()
            )));
        };
        if let Some(other) = slices.insert(index, path) {
            return Err(Failure::Input(format!(
                "{} and {} are both slice {index}",
                other.display(),
                path.display()
            )));
        }
        seconds += summary["seconds"].as_f64().unwrap_or(0.0);
        for row in summary["images"].as_array().into_iter().flatten() {
            let index = row["input_index"]
                .as_u64()
                .ok_or_else(|| format!("{}: a row has no input_index", path.display()))?;
            rows.insert(index, row.clone());
        }
    }
    let count = count.unwrap_or(0);
    let missing: Vec<String> = (0..count)
        .filter(|k| !slices.contains_key(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Failure::Input(format!(
            "slices {} are missing: merge the summaries of all {count} slices",
            missing.join(", ")
        )));
    }
    let inputs = first["inputs"].as_u64().unwrap_or(0);
    if rows.len() as u64 != inputs {
        return Err(Failure::Input(format!(
            "the slices hold {} of the run's {inputs} inputs; was a slice interrupted? (rerun it with --resume)",
            rows.len()
        )));
    }
    let mut merged = first.clone();
    merged["shard"] = Value::Null;
    merged["seconds"] = json!(seconds);
    merged["images"] = Value::Array(rows.into_values().collect());
    write_json(&args.out, &merged)?;
    println!(
        "merged {} slices ({inputs} inputs) into {}",
        summaries.len(),
        args.out.display()
    );
    if args.report {
        let report = write_report(&args.out)?;
        println!("report written to {}", report.display());
    }
    Ok(())
}
