/// Encodes an `RGBImage` as a PNG: 8-bit RGB, one zlib-compressed IDAT of filtered scanlines.
public enum PNGEncoder {
    /// - Parameter level: zlib level 0 ... 9 (-1 is zlib's default); clamped.
    public static func encode(_ image: RGBImage, level: Int32 = 6) -> [UInt8] {
        let compressed = Deflater(level: level).compress(ScanlineFilter.filtered(image))
        var png = PNGChunkWriter(reservingCapacity: compressed.count + 64)
        png.append("IHDR", data: PNGChunkWriter.header(width: image.width, height: image.height))
        png.append("IDAT", data: compressed)
        png.append("IEND")
        return png.bytes
    }
}
