//! The README's lists are the library's tables: operators, methods, rectifiers, colour maps,
//! devices, metrics.
//! On a mismatch the test prints the block to paste.

use ember_cam::vision::{ChannelOrder, ColormapName, ResizeFilter, ValueRange};
use ember_cam::vocabulary::names;
use ember_cam::{Method, Rectifier, SpatialLayout, Vocabulary};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The text between the line starting with `<!-- {start}` and the line `<!-- end of {end} -->`.
fn block(readme: &str, start: &str, end: &str) -> String {
    let begin = readme
        .find(&format!("<!-- {start}"))
        .unwrap_or_else(|| panic!("README has no `<!-- {start}` marker"));
    let body = &readme[begin..];
    let body = &body[body.find('\n').expect("a marker line") + 1..];
    let stop = body
        .find(&format!("<!-- end of {end} -->"))
        .unwrap_or_else(|| panic!("README has no `<!-- end of {end} -->` marker"));
    body[..stop].trim_end().to_owned()
}

fn quoted<V: Vocabulary>() -> String {
    names::<V>()
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn the_vocabulary_lists_are_the_tables() {
    let devices: Vec<String> = ember_cam::device_names().iter().map(|n| format!("`{n}`")).collect();
    let expected = format!(
        "- `--method`: {}\n- `--rectifier`: {}\n- `--colormap`: {}\n- `--device`: {}\n- `--channel-order`: {}\n\
         - `--value-range`: {}\n- `--resize-filter`: {}\n- `--layout`, `--input-layout`: {}",
        quoted::<Method>(),
        quoted::<Rectifier>(),
        quoted::<ColormapName>(),
        devices.join(", "),
        quoted::<ChannelOrder>(),
        quoted::<ValueRange>(),
        quoted::<ResizeFilter>(),
        quoted::<SpatialLayout>()
    );
    let found = block(&readme(), "vocabularies", "vocabularies");
    assert_eq!(found, expected, "update the README's vocabularies to:\n{expected}");
}

#[test]
fn the_metric_list_is_the_table() {
    let expected = format!("- `--metrics`: {}", quoted::<ember_cam::Metric>());
    let found = block(&readme(), "metrics", "metrics");
    assert_eq!(found, expected, "update the README's metrics to:\n{expected}");
}

#[test]
fn the_operator_list_is_the_executor_s_table() {
    let operators = ember_runtime::supported_operators();
    // Wrapped at 100 columns, as the rest of the README.
    let mut lines: Vec<String> = vec![String::new()];
    let total = operators.len();
    for (i, name) in operators.iter().enumerate() {
        let word = if i + 1 == total {
            format!("{name} ({total})")
        } else {
            format!("{name},")
        };
        let line = lines.last_mut().expect("a line");
        if !line.is_empty() && line.len() + 1 + word.len() > 100 {
            lines.push(word);
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
    }
    let expected = lines.join("\n");
    let found = block(&readme(), "operators", "operators");
    assert_eq!(found, expected, "update the README's operator list to:\n{expected}");
}
