//! `report.html`: one card per explained image, sortable and filterable, as a static page with
//! relative links to the pictures beside it. It works without scripts (cards in input order);
//! the script sorts, filters and counts the pictures that loaded.

use std::fmt::Write as _;
use std::path::Path;

/// One image's card.
#[derive(Debug, Clone, Default)]
pub struct Card {
    /// The input's name, as the user gave it.
    pub name: String,
    /// The input photo's thumbnail, relative to the report.
    pub thumbnail: Option<String>,
    /// The overlay or comparison sheet, relative to the report.
    pub overlay: Option<String>,
    /// The explained class (or a dense output's channel), its label, score and probability
    /// (none for dense outputs).
    pub class: Option<(usize, String, f32, Option<f32>)>,
    /// What a dense output's score sums (`channel 1 of `seg` summed over x 0..8, y 0..4`).
    pub target: Option<String>,
    /// The top classes: index, label, probability.
    pub top: Vec<(usize, String, f32)>,
    /// The map's peak: x, y (network input pixels) and value.
    pub peak: Option<(usize, usize, f32)>,
    /// Seconds spent explaining the image.
    pub seconds: Option<f64>,
    /// Why the image could not be explained.
    pub error: Option<String>,
}

/// Text made safe for HTML content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A relative path as a URL: every byte outside the unreserved set percent-encoded (a file
/// called `cat #2.png` links to `cat%20%232.png`), `/` kept between components.
pub fn relative_href(path: &str) -> String {
    let mut href = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            href.push(byte as char);
        } else {
            let _ = write!(href, "%{byte:02X}");
        }
    }
    href
}

/// The path of `file` relative to the folder `base`, when it lies inside it (`None` otherwise).
pub fn relative_to(file: &Path, base: &Path) -> Option<String> {
    let absolute = |p: &Path| std::path::absolute(p).ok();
    let (file, base) = (absolute(file)?, absolute(base)?);
    let relative = file.strip_prefix(&base).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f6f4; color: #1d1d1d; }
header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: baseline; }
h1 { font-size: 1.4rem; margin: 0 1rem 0 0; }
.controls { display: flex; gap: 1rem; margin: 1rem 0; }
#warning { color: #a40000; font-weight: bold; }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
.card { background: white; border-radius: 6px; box-shadow: 0 1px 3px #0003; padding: 0.8rem; }
.card.failed { border-left: 4px solid #a40000; }
.pictures { display: grid; grid-template-columns: 1fr 2fr; gap: 0.5rem; align-items: start; }
.pictures.one { grid-template-columns: 1fr; }
.pictures img { width: 100%; height: auto; border-radius: 3px; display: block; }
.name { font-weight: bold; overflow-wrap: anywhere; margin-bottom: 0.4rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin-top: 0.5rem; }
td { padding: 0.1rem 0.5rem 0.1rem 0; }
td.p { text-align: right; font-variant-numeric: tabular-nums; }
.facts { font-size: 0.85rem; color: #444; margin-top: 0.4rem; }
.error { color: #a40000; }
"#;

const SCRIPT: &str = r#"
(function () {
  var grid = document.getElementById('cards');
  var cards = Array.prototype.slice.call(grid.children);
  var sort = document.getElementById('sort');
  var filter = document.getElementById('filter');
  function number(card, key) { var v = parseFloat(card.dataset[key]); return isNaN(v) ? -Infinity : v; }
  var orders = {
    input: function (a, b) { return number(a, 'index') - number(b, 'index'); },
    'score-desc': function (a, b) { return number(b, 'score') - number(a, 'score'); },
    'score-asc': function (a, b) { return number(a, 'score') - number(b, 'score'); },
    'class': function (a, b) { return (a.dataset.label || '').localeCompare(b.dataset.label || '') || number(a, 'index') - number(b, 'index'); },
    time: function (a, b) { return number(b, 'seconds') - number(a, 'seconds'); }
  };
  function update() {
    var order = orders[sort.value] || orders.input;
    cards.slice().sort(order).forEach(function (card) {
      card.hidden = filter.value !== '' && card.dataset['class'] !== filter.value;
      grid.appendChild(card);
    });
    var shown = cards.filter(function (card) { return !card.hidden; }).length;
    document.getElementById('count').textContent = shown + ' of ' + cards.length + ' images';
  }
  sort.addEventListener('change', update);
  filter.addEventListener('change', update);
  update();
  var images = Array.prototype.slice.call(document.images);
  var loaded = 0, broken = 0;
  function settle() {
    document.body.dataset.loaded = loaded;
    document.body.dataset.broken = broken;
    if (broken > 0) {
      document.getElementById('warning').textContent = broken + ' picture(s) could not be loaded';
    }
  }
  images.forEach(function (image) {
    function done() { if (image.complete && image.naturalWidth > 0) { loaded += 1; } else { broken += 1; } settle(); }
    if (image.complete) { done(); } else {
      image.addEventListener('load', done);
      image.addEventListener('error', done);
    }
  });
  document.body.dataset.images = images.length;
  settle();
})();
"#;

/// The page: a title, a line of facts (model, method, device…), and the cards.
pub fn report_html(title: &str, facts: &str, cards: &[Card]) -> String {
    let mut classes: Vec<(usize, String, usize)> = Vec::new();
    for (class, label, _, _) in cards.iter().filter_map(|c| c.class.as_ref()) {
        match classes.iter_mut().find(|(c, _, _)| c == class) {
            Some(entry) => entry.2 += 1,
            None => classes.push((*class, label.clone(), 1)),
        }
    }
    classes.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header><h1>{title}</h1>\
         <span>{facts}</span></header>\n",
        title = escape_html(title),
        facts = escape_html(facts)
    );
    page.push_str("<div class=\"controls\"><label>Sort <select id=\"sort\">");
    for (value, text) in [
        ("input", "input order"),
        ("score-desc", "score, highest first"),
        ("score-asc", "score, lowest first"),
        ("class", "class"),
        ("time", "time, slowest first"),
    ] {
        let _ = write!(page, "<option value=\"{value}\">{text}</option>");
    }
    page.push_str("</select></label><label>Class <select id=\"filter\"><option value=\"\">all</option>");
    for (class, label, count) in &classes {
        let _ = write!(
            page,
            "<option value=\"{class}\">{class} {} ({count})</option>",
            escape_html(label)
        );
    }
    page.push_str(
        "</select></label><span id=\"count\"></span><span id=\"warning\"></span></div>\n<main id=\"cards\">\n",
    );
    for (index, card) in cards.iter().enumerate() {
        write_card(&mut page, index, card);
    }
    let _ = write!(page, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
    page
}

fn write_card(page: &mut String, index: usize, card: &Card) {
    let (class, label, score) = match &card.class {
        Some((class, label, score, _)) => (class.to_string(), label.clone(), format!("{score}")),
        None => (String::new(), String::new(), String::new()),
    };
    let seconds = card.seconds.map(|s| format!("{s}")).unwrap_or_default();
    let _ = write!(
        page,
        "<article class=\"card{failed}\" data-index=\"{index}\" data-class=\"{class}\" data-label=\"{label}\" \
         data-score=\"{score}\" data-seconds=\"{seconds}\">\n<div class=\"name\">{name}</div>\n<div class=\"pictures{one}\">",
        one = if card.thumbnail.is_some() && card.overlay.is_some() {
            ""
        } else {
            " one"
        },
        failed = if card.error.is_some() { " failed" } else { "" },
        label = escape_html(&label),
        name = escape_html(&card.name),
    );
    if let Some(thumbnail) = &card.thumbnail {
        let _ = write!(
            page,
            "<a href=\"{href}\"><img class=\"thumb\" src=\"{href}\" alt=\"input\"></a>",
            href = escape_html(&relative_href(thumbnail))
        );
    }
    if let Some(overlay) = &card.overlay {
        let _ = write!(
            page,
            "<a href=\"{href}\"><img class=\"overlay\" src=\"{href}\" alt=\"explanation\"></a>",
            href = escape_html(&relative_href(overlay))
        );
    }
    page.push_str("</div>\n");
    if let Some(error) = &card.error {
        let _ = writeln!(page, "<div class=\"error\">{}</div>", escape_html(error));
    }
    if !card.top.is_empty() {
        page.push_str("<table>");
        for (class, label, probability) in &card.top {
            let _ = write!(
                page,
                "<tr><td class=\"p\">{:.1}%</td><td>{class}</td><td>{}</td></tr>",
                100.0 * probability,
                escape_html(label)
            );
        }
        page.push_str("</table>\n");
    }
    let mut facts = Vec::new();
    if let Some((class, label, score, probability)) = &card.class {
        let what = card.target.clone().unwrap_or_else(|| format!("{class} {label}"));
        let probability = probability.map_or_else(String::new, |p| format!(" · p {:.1}%", 100.0 * p));
        facts.push(format!(
            "explained {} · score {score:.4}{probability}",
            escape_html(&what)
        ));
    }
    if let Some((x, y, value)) = card.peak {
        facts.push(format!("peak ({x}, {y}) = {value:.3}"));
    }
    if let Some(seconds) = card.seconds {
        facts.push(format!("{:.0} ms", 1000.0 * seconds));
    }
    if !facts.is_empty() {
        let _ = writeln!(page, "<div class=\"facts\">{}</div>", facts.join(" · "));
    }
    page.push_str("</article>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_are_escaped() {
        assert_eq!(relative_href("cat #2 <b>.png"), "cat%20%232%20%3Cb%3E.png");
        assert_eq!(relative_href("a/b-c_d.e~"), "a/b-c_d.e~");
        let card = Card {
            name: "<script>alert(1)</script>".into(),
            overlay: Some("x\".png".into()),
            class: Some((3, "a & b".into(), 1.5, Some(0.25))),
            ..Card::default()
        };
        let page = report_html("t", "f", &[card]);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("src=\"x%22.png\""));
        assert!(page.contains("<option value=\"3\">3 a &amp; b (1)</option>"));
    }

    #[test]
    fn relative_paths_inside_the_folder_only() {
        let base = Path::new("out");
        assert_eq!(relative_to(Path::new("out/a/b.png"), base).as_deref(), Some("a/b.png"));
        assert_eq!(relative_to(Path::new("elsewhere/b.png"), base), None);
    }
}
