//! PNG files from plotters' bitmap backend, encoded with the `png` crate.
//!
//! plotters can save a PNG itself (its `bitmap_encoder` feature), but that pulls in the whole
//! `image` crate and its decoders: ~20 s of a cold `make test` for one call. Here the plot is
//! drawn into an RGB buffer and the buffer written as an 8-bit RGB PNG.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, IntoDrawingArea};

/// Draws `size` pixels with `draw` and writes them to `path` as a PNG.
///
/// # Errors
///
/// What `draw` returns, or if the file cannot be written.
pub fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>) -> Result<()> {
    let (width, height) = size;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("plotting: {e:?}"))?;
    }
    write(path, size, &rgb)
}

/// Writes `rgb` (row-major, 3 bytes a pixel) as an 8-bit RGB PNG.
fn write(path: &Path, (width, height): (u32, u32), rgb: &[u8]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // A plot is flat colour and thin lines: an adaptive filter per row and the best deflate
    // keep it at the size the image crate wrote (the png crate's defaults made 3× larger files).
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().with_context(|| format!("writing {}", path.display()))?;
    writer.write_image_data(rgb).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use plotters::prelude::*;

    use super::*;

    #[test]
    fn a_drawn_plot_reads_back_as_the_same_pixels() {
        let dir = std::env::temp_dir().join(format!("busline-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.png");
        render(&path, (4, 3), |root| {
            root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            root.draw_pixel((1, 2), &RED).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        })
        .unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (4, 3, png::ColorType::Rgb));
        let pixel = |x: usize, y: usize| &buf[(y * 4 + x) * 3..][..3];
        assert_eq!(pixel(1, 2), [255, 0, 0]);
        assert_eq!(pixel(0, 0), [255, 255, 255]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
