"""The real-pages study (projects/real_pages/README.md): its datasets and its evaluation."""
