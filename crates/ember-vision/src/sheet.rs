//! Comparison sheets: a grid of pictures with row and column labels and a header, the text
//! rendered with the bundled DejaVu Sans through `ab_glyph`.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use ember_core::checked_bytes;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use crate::VisionError;

/// DejaVu Sans (Bitstream Vera licence, see `fonts/DejaVuSans-LICENSE.txt`): labels look the same
/// on every machine, with no system fonts needed.
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).expect("the bundled font parses"))
}

/// Size and colour of a line of text.
#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    /// Height of the font in pixels.
    pub size: f32,
    /// Colour of the glyphs.
    pub colour: [u8; 3],
}

/// The width in pixels of `text` in `style` (advances and kerning).
pub fn text_width(text: &str, style: TextStyle) -> u32 {
    let font = font().as_scaled(PxScale::from(style.size));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let glyph = font.glyph_id(c);
        if let Some(previous) = previous {
            width += font.kern(previous, glyph);
        }
        width += font.h_advance(glyph);
        previous = Some(glyph);
    }
    width.ceil() as u32
}

/// Draws one line of `text` with its top-left corner at `(x, y)`, blending the glyphs'
/// coverage over the image; what falls outside the image is clipped.
pub fn draw_text(image: &mut RgbImage, text: &str, x: f32, y: f32, style: TextStyle) {
    let scale = PxScale::from(style.size);
    let scaled = font().as_scaled(scale);
    let baseline = y + scaled.ascent();
    let mut caret = x;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, id);
        }
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font().outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if px < 0 || py < 0 || px >= i64::from(image.width()) || py >= i64::from(image.height()) {
                return;
            }
            let pixel = image.get_pixel_mut(px as u32, py as u32);
            let coverage = coverage.clamp(0.0, 1.0);
            for (channel, &ink) in pixel.0.iter_mut().zip(&style.colour) {
                *channel = (f32::from(*channel) * (1.0 - coverage) + f32::from(ink) * coverage).round() as u8;
            }
        });
    }
}

/// A grid of pictures: a header line, column labels above, row labels on the left.
///
/// ```
/// use ember_vision::Sheet;
/// use image::RgbImage;
/// let mut sheet = Sheet::new("cat.png: class 281 tabby (score 12.3)", vec!["relu".into(), "abs".into()]);
/// sheet.row("gradcam", vec![RgbImage::new(32, 24), RgbImage::new(32, 24)]).unwrap();
/// let picture = sheet.render().unwrap();
/// assert!(picture.width() > 64 && picture.height() > 24);
/// ```
#[derive(Debug, Clone)]
pub struct Sheet {
    title: String,
    columns: Vec<String>,
    rows: Vec<(String, Vec<RgbImage>)>,
    /// The longest side a picture is shown at; larger ones are scaled down.
    max_cell: u32,
}

const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [20, 20, 20];
const MARGIN: u32 = 10;

impl Sheet {
    /// An empty sheet with a header line and the labels of its columns.
    pub fn new(title: impl Into<String>, columns: Vec<String>) -> Self {
        Self {
            title: title.into(),
            columns,
            rows: Vec::new(),
            max_cell: 448,
        }
    }

    /// Pictures larger than `pixels` on their longer side are scaled down to it (448 unless set).
    pub fn max_cell(mut self, pixels: u32) -> Self {
        self.max_cell = pixels.max(16);
        self
    }

    /// Adds a row: its label and one picture per column.
    pub fn row(&mut self, label: impl Into<String>, cells: Vec<RgbImage>) -> Result<(), VisionError> {
        if cells.len() != self.columns.len() {
            return Err(VisionError::Size(format!(
                "a sheet row has {} pictures for {} columns",
                cells.len(),
                self.columns.len()
            )));
        }
        self.rows.push((label.into(), cells));
        Ok(())
    }

    /// The sheet as one picture.
    pub fn render(&self) -> Result<RgbImage, VisionError> {
        let title_style = TextStyle {
            size: 20.0,
            colour: INK,
        };
        let label_style = TextStyle {
            size: 16.0,
            colour: INK,
        };
        let cells: Vec<Vec<RgbImage>> = self
            .rows
            .iter()
            .map(|(_, cells)| cells.iter().map(|cell| self.fitted(cell)).collect())
            .collect();
        let cell_width = cells.iter().flatten().map(RgbImage::width).max().unwrap_or(0);
        let cell_height = cells.iter().flatten().map(RgbImage::height).max().unwrap_or(0);
        let label_width = self
            .rows
            .iter()
            .map(|(label, _)| text_width(label, label_style))
            .max()
            .unwrap_or(0);
        let left = MARGIN + label_width + if label_width > 0 { MARGIN } else { 0 };
        let title_height = title_style.size.ceil() as u32 + MARGIN;
        let header_height = label_style.size.ceil() as u32 + MARGIN / 2;
        let top = MARGIN + title_height + header_height;
        let columns = self.columns.len() as u64;
        let rows = self.rows.len() as u64;
        let grid_width = columns * u64::from(cell_width + MARGIN);
        let width = (u64::from(left) + grid_width)
            .max(u64::from(MARGIN + text_width(&self.title, title_style) + MARGIN))
            .max(1);
        let height = u64::from(top) + rows * u64::from(cell_height + MARGIN);
        let too_large = || VisionError::Size(format!("a sheet of {columns}×{rows} pictures is too large"));
        let (width, height) = (
            u32::try_from(width).map_err(|_| too_large())?,
            u32::try_from(height).map_err(|_| too_large())?,
        );
        checked_bytes("the comparison sheet", &[height, width, 3], 1)?;
        let mut sheet = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
        draw_text(&mut sheet, &self.title, MARGIN as f32, MARGIN as f32, title_style);
        for (column, label) in self.columns.iter().enumerate() {
            let x = left + column as u32 * (cell_width + MARGIN);
            let centred = x as f32 + (cell_width as f32 - text_width(label, label_style) as f32).max(0.0) / 2.0;
            draw_text(&mut sheet, label, centred, (MARGIN + title_height) as f32, label_style);
        }
        for (row, ((label, _), pictures)) in self.rows.iter().zip(&cells).enumerate() {
            let y = top + row as u32 * (cell_height + MARGIN);
            let middle = y as f32 + (cell_height as f32 - label_style.size) / 2.0;
            draw_text(&mut sheet, label, MARGIN as f32, middle, label_style);
            for (column, picture) in pictures.iter().enumerate() {
                let x = left + column as u32 * (cell_width + MARGIN) + (cell_width - picture.width()) / 2;
                let y = y + (cell_height - picture.height()) / 2;
                imageops::replace(&mut sheet, picture, i64::from(x), i64::from(y));
            }
        }
        Ok(sheet)
    }

    /// `picture`, scaled down to fit the cell size if it is larger.
    fn fitted(&self, picture: &RgbImage) -> RgbImage {
        let (width, height) = picture.dimensions();
        let longer = width.max(height);
        if longer <= self.max_cell {
            return picture.clone();
        }
        let scale = f64::from(self.max_cell) / f64::from(longer);
        let fit = |side: u32| ((f64::from(side) * scale).round() as u32).max(1);
        imageops::resize(picture, fit(width), fit(height), FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_in_ink_and_measured() {
        let style = TextStyle {
            size: 16.0,
            colour: [0, 0, 0],
        };
        let mut image = RgbImage::from_pixel(80, 24, Rgb([255, 255, 255]));
        draw_text(&mut image, "Grad", 2.0, 2.0, style);
        let dark = image.pixels().filter(|p| p[0] < 128).count();
        assert!(dark > 20, "{dark} dark pixels");
        assert!(text_width("Grad-CAM", style) > text_width("Grad", style));
        assert_eq!(text_width("", style), 0);
        // Text running off the image is clipped, not a panic.
        draw_text(&mut image, "a long line of text", 70.0, 20.0, style);
    }

    #[test]
    fn a_two_by_three_sheet_holds_every_picture_and_scales_large_ones() {
        let red = RgbImage::from_pixel(900, 600, Rgb([255, 0, 0]));
        let mut sheet = Sheet::new("title", vec!["relu".into(), "abs".into(), "signed".into()]);
        sheet
            .row("gradcam", vec![red.clone(), red.clone(), red.clone()])
            .unwrap();
        sheet
            .row("hirescam", vec![red.clone(), red.clone(), red.clone()])
            .unwrap();
        assert!(sheet.row("short", vec![red.clone()]).is_err());
        let picture = sheet.render().unwrap();
        // Cells of 448×299 after scaling, three columns and two rows plus labels and margins.
        assert!(
            picture.width() > 3 * 448 && picture.width() < 3 * 448 + 200,
            "{}",
            picture.width()
        );
        assert!(
            picture.height() > 2 * 299 && picture.height() < 2 * 299 + 120,
            "{}",
            picture.height()
        );
        let red_pixels = picture.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        assert!(red_pixels >= 6 * 448 * 298, "{red_pixels}");
    }
}
