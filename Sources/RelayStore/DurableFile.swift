/// Small files replaced whole and durably (a ledger, a settings file): the store's own way of writing — a temporary
/// file fsynced, renamed over the old one, the directory fsynced — for modules outside the store.
public enum DurableFile {
    /// Replaces `path` with `bytes`: after a crash the file holds either its old or its new contents, never a part.
    public static func replace(_ path: String, with bytes: [UInt8]) throws(StoreError) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let temporary = try BlobFileIO.writeTemporaryFile(prefix: path + ".tmp-") { fd, written throws(StoreError) in
            try BlobFileIO.writeAll(fd, bytes, path: written)
        }
        do throws(StoreError) {
            try BlobFileIO.replace(path, with: temporary)
        } catch {
            _ = try? BlobFileIO.remove(temporary)
            throw error
        }
        try BlobFileIO.syncDirectory(directory.isEmpty ? "/" : directory)
    }
}
